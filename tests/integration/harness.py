"""
harness.py: the world the integration tests run in. A scratch PostgreSQL 15 cluster (one per test
file), sluice processes in front of it (one or more per test), clients (psycopg2, psql, pgbench and a
raw protocol socket), and a TAP runner where each test is a function with its own time limit.
Everything started is stopped again, on success, failure, timeout or interpreter exit.

Environment:
  SLUICE_BIN               the sluice binary (make check sets it)
  SLUICE_IT_DIRECT=1       point clients at PostgreSQL itself instead of sluice, to check the tests'
                           own logic; tests that only make sense with a pooler are skipped
  SLUICE_IT_ONLY=TEXT      run only tests whose name contains TEXT
  SLUICE_IT_TIMEOUT_SCALE  multiply every per-test time limit (slow machines, sanitizers)
  SLUICE_IT_KEEP=1         keep the scratch directory for inspection
  SLUICE_IT_WORKERS=N      every sluice config the harness writes says workers = N, unless the test
                           sets workers itself (unset: no line, sluice's default applies)
"""

import os
import sys


def _reexec_with_system_python():
    """psycopg2 comes from Debian's python3-psycopg2, which only the system interpreter sees."""
    try:
        import psycopg2  # noqa: F401
        return
    except ImportError:
        pass
    system_python = "/usr/bin/python3"
    if (os.path.exists(system_python)
            and os.path.realpath(sys.executable) != os.path.realpath(system_python)
            and not os.environ.get("SLUICE_IT_REEXEC")):
        os.environ["SLUICE_IT_REEXEC"] = "1"
        os.execv(system_python, [system_python] + sys.argv)
    print("Bail out! python3-psycopg2 is not installed (apt-get install python3-psycopg2)")
    sys.exit(1)


_reexec_with_system_python()

import atexit  # noqa: E402
import base64  # noqa: E402
import hashlib  # noqa: E402
import hmac  # noqa: E402
import pwd  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import psycopg2  # noqa: E402
import psycopg2.errors  # noqa: E402,F401
import psycopg2.extensions  # noqa: E402

# ---- constants ------------------------------------------------------------------------------------

PROTOCOL_3_0 = 196608
PROTOCOL_3_2 = (3 << 16) | 2
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "super_pw"
# Roles every cluster has: name -> (password, how Postgres stores it)
ROLES = {
    "app": ("app_pw", "scram-sha-256"),
    "scram_user": ("scram_pw", "scram-sha-256"),
    "md5_user": ("md5_pw", "md5"),
    "trust_user": (None, None),
}
APP_DB = "appdb"
UNPRIVILEGED_USER = "sluicetest"
# The admin console login tests put in admin_users and the auth file: (user, password)
ADMIN = ("admin", "admin_pw")

DIRECT_MODE = os.environ.get("SLUICE_IT_DIRECT") == "1"
TIMEOUT_SCALE = float(os.environ.get("SLUICE_IT_TIMEOUT_SCALE", "1"))
WORKERS = os.environ.get("SLUICE_IT_WORKERS") or None
# A report from any sanitizer sluice was built with fails the test that was running. ThreadSanitizer
# goes on after a report (halt_on_error=0), so its reports are found here, not by sluice's exit.
SANITIZER_PATTERNS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                      "WARNING: AddressSanitizer", "SUMMARY: UndefinedBehaviorSanitizer",
                      "WARNING: ThreadSanitizer", "ERROR: ThreadSanitizer", "FATAL: ThreadSanitizer")


# ---- small utilities -----------------------------------------------------------------------------

class TestFailure(AssertionError):
    pass


class Skip(Exception):
    pass


def check(condition, message):
    if not condition:
        raise TestFailure(message)


def check_equal(got, want, what):
    if got != want:
        raise TestFailure(f"{what}: got {got!r}, want {want!r}")


ALLOWED_CPUS = sorted(os.sched_getaffinity(0))


class on_cpu:
    """Runs the calling thread on one CPU for the block: a loopback connection it opens arrives
    on that CPU, which is how sluice's steer_by_cpu picks its worker."""

    def __init__(self, cpu):
        self.cpu = cpu

    def __enter__(self):
        self.before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {self.cpu})

    def __exit__(self, *exc):
        os.sched_setaffinity(0, self.before)


def cpu_of_attempt(attempt):
    """Tests that open connections until one lands on a given worker open each from the next CPU
    in turn: with steer_by_cpu, one CPU reaches one worker."""
    return on_cpu(ALLOWED_CPUS[attempt % len(ALLOWED_CPUS)])


def wait_for(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate() until it returns a true value; returns that value or fails."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # the predicate may fail while things settle
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TestFailure(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def make_certificates(directory):
    """The certificates tests/tls/make-certs.sh makes (ca, server for localhost, client, and an
    unrelated CA with a client of its own) in directory, made once; returns the directory."""
    srcdir = os.environ.get("SLUICE_SRCDIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                             "..", "..")
    script = os.path.join(srcdir, "tests", "tls", "make-certs.sh")
    result = subprocess.run(["sh", script, directory], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=60)
    if result.returncode != 0:
        raise TestFailure(f"{script} failed:\n{result.stdout}")
    return directory


_ports_handed_out = set()
_port_claims = []  # open descriptors of the claim files this process holds: kept until it exits
_port_claims_directory = None  # made on the first claim


def _claims_directory():
    global _port_claims_directory
    if _port_claims_directory is None:
        directory = os.path.join(tempfile.gettempdir(), "sluice-it-ports")
        os.makedirs(directory, exist_ok=True)
        try:
            os.chmod(directory, 0o1777)
        except PermissionError:
            pass  # made by another user, who opened it to all already
        _port_claims_directory = directory
    return _port_claims_directory


def _claim_port(port):
    """Claims a port against every other test process on this machine. Tests run in parallel,
    each in its own process, and a port one of them was handed may not be listened on yet (or
    ever: listen_addr empty), so a bind check alone lets two tests share one. The claim is a lock
    on a file named after the port; the kernel drops it when the process ends, so a killed run
    leaves nothing held."""
    import fcntl
    try:
        fd = os.open(os.path.join(_claims_directory(), str(port)), os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:
        return False  # another user's file that this one may not open (fs.protected_regular)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _port_claims.append(fd)
    return True


def free_port():
    """A port nothing listens on, below the kernel's range for outgoing connections: a port from
    that range can be taken by some client socket before a test (re)starts a server on it. Never
    the same one twice in a run, in this process or another test's: two asked for before either
    is listened on would collide."""
    import random
    for _ in range(200):
        port = random.randint(26000, 32000)  # bench/run uses 24432 and up
        if port in _ports_handed_out:
            continue
        _ports_handed_out.add(port)
        if not _claim_port(port):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 26000 and 32000")


def md5_secret(user, password):
    """PgBouncer/Postgres md5 secret: 'md5' + md5(password + user)."""
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def scram_secret(password, salt=None, iterations=4096):
    """A SCRAM-SHA-256 verifier as Postgres stores it (RFC 5803 layout)."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


class Background:
    """Runs fn(*args) in a daemon thread; result() re-raises its exception."""

    def __init__(self, fn, *args, **kwargs):
        self._value = None
        self._error = None
        self.finished_at = None
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, fn, args, kwargs):
        try:
            self._value = fn(*args, **kwargs)
        except BaseException as e:  # handed to result()
            self._error = e
        finally:
            self.finished_at = time.monotonic()

    def done(self):
        return not self._thread.is_alive()

    def elapsed(self):
        return (self.finished_at or time.monotonic()) - self.started_at

    def wait(self, timeout):
        self._thread.join(timeout)
        return self.done()

    def result(self, timeout):
        if not self.wait(timeout):
            raise TestFailure(f"background call still running after {timeout}s")
        if self._error is not None:
            raise self._error
        return self._value

    def error(self, timeout):
        """Waits and returns the exception the call raised (None if it succeeded)."""
        if not self.wait(timeout):
            raise TestFailure(f"background call still running after {timeout}s")
        return self._error


# ---- process bookkeeping -------------------------------------------------------------------------

_live_processes = []  # every Popen we started and have not reaped yet
_live_lock = threading.Lock()


def _track(proc):
    with _live_lock:
        _live_processes.append(proc)
    return proc


def _kill_tracked():
    with _live_lock:
        procs = list(_live_processes)
    for proc in procs:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


def _on_sigterm(signum, frame):
    sys.exit(128 + signum)  # runs atexit handlers


# ---- PostgreSQL binaries and the unprivileged user ------------------------------------------------

def pg_bindir():
    explicit = os.environ.get("SLUICE_PG_BINDIR")
    if explicit:
        return explicit
    preferred = "/usr/lib/postgresql/15/bin"
    if os.path.exists(os.path.join(preferred, "initdb")):
        return preferred
    root = "/usr/lib/postgresql"
    versions = sorted((v for v in os.listdir(root) if v.isdigit()), key=int) if os.path.isdir(root) else []
    for version in reversed(versions):
        candidate = os.path.join(root, version, "bin")
        if os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql-15")


def pg_tool(name):
    return os.path.join(pg_bindir(), name)


def _postgres_account():
    """(uid, gid) to run postgres as: ourselves, or an unprivileged account when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        # Another test file may be creating it at the same moment; look again either way.
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", UNPRIVILEGED_USER],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path, account):
    if account is None:
        return
    uid, gid = account
    os.chown(path, uid, gid)
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), uid, gid)


def _scratch_root():
    # Unix socket paths are limited to ~107 bytes and the postgres account must reach the directory.
    return os.environ.get("SLUICE_IT_TMPDIR", "/tmp")


# ---- the PostgreSQL cluster ----------------------------------------------------------------------

class Cluster:
    """A throwaway PostgreSQL cluster listening on a free loopback port and a unix socket."""

    def __init__(self, base_dir):
        self.base_dir = base_dir
        self.data_dir = os.path.join(base_dir, "pgdata")
        self.socket_dir = os.path.join(base_dir, "pgsock")
        self.log_path = os.path.join(base_dir, "postgres.log")
        self.host = "127.0.0.1"
        self.port = None
        self.account = _postgres_account()
        self.started = False

    # -- lifecycle --
    def _run_as_postgres(self, argv, timeout=120):
        kwargs = {}
        if self.account:
            kwargs = {"user": self.account[0], "group": self.account[1], "extra_groups": []}
        return subprocess.run(argv, cwd=self.base_dir, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout, **kwargs)

    def start(self):
        os.makedirs(self.socket_dir, exist_ok=True)
        pwfile = os.path.join(self.base_dir, "superuser.pw")
        with open(pwfile, "w") as f:
            f.write(SUPERUSER_PASSWORD + "\n")
        _chown_tree(self.base_dir, self.account)
        result = self._run_as_postgres([
            pg_tool("initdb"), "-D", self.data_dir, "-U", SUPERUSER, "--pwfile", pwfile,
            "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"])
        if result.returncode != 0:
            raise RuntimeError("initdb failed:\n" + result.stdout)
        self._write_pg_hba()
        last_output = ""
        for _attempt in range(5):
            self.port = free_port()
            self._write_settings()
            result = self._run_as_postgres([
                pg_tool("pg_ctl"), "-D", self.data_dir, "-l", self.log_path, "-w", "-t", "60",
                "start"])
            if result.returncode == 0:
                break
            last_output = result.stdout + self.log_tail()
        else:
            raise RuntimeError("PostgreSQL did not start:\n" + last_output)
        self.started = True
        self._create_roles()

    def _write_pg_hba(self):
        # trust_user logs in without a password; everyone else with md5, which is SCRAM when the
        # stored secret is a SCRAM verifier, so backends exercise both password methods.
        with open(os.path.join(self.data_dir, "pg_hba.conf"), "w") as f:
            f.write("local all trust_user trust\n"
                    "host  all trust_user 127.0.0.1/32 trust\n"
                    "local all all md5\n"
                    "host  all all 127.0.0.1/32 md5\n"
                    "host  all all ::1/128 md5\n")

    def _write_settings(self):
        with open(os.path.join(self.data_dir, "postgresql.auto.conf"), "w") as f:
            f.write(f"listen_addresses = '127.0.0.1'\n"
                    f"port = {self.port}\n"
                    f"unix_socket_directories = '{self.socket_dir}'\n"
                    "max_connections = 150\n"
                    "shared_buffers = 32MB\n"
                    "fsync = off\n"
                    "synchronous_commit = off\n"
                    "full_page_writes = off\n"
                    "log_min_messages = warning\n"
                    "log_connections = off\n")
        if self.account:
            os.chown(os.path.join(self.data_dir, "postgresql.auto.conf"), *self.account)

    def _create_roles(self):
        for role, (password, encryption) in ROLES.items():
            if password is None:
                self.sql(f"CREATE ROLE {role} LOGIN", dbname="postgres")
                continue
            # password_encryption decides how Postgres stores this role's secret (md5 or SCRAM).
            self.sql(f"SET password_encryption = '{encryption}'; "
                     f"CREATE ROLE {role} LOGIN PASSWORD '{password}'", dbname="postgres")
        self.sql(f"CREATE DATABASE {APP_DB} OWNER app", dbname="postgres")
        self.sql("GRANT ALL ON SCHEMA public TO PUBLIC")

    def stop(self):
        if not self.started:
            return
        self.started = False
        result = self._run_as_postgres([pg_tool("pg_ctl"), "-D", self.data_dir, "-m", "immediate",
                                        "-w", "-t", "30", "stop"], timeout=60)
        if result.returncode != 0:
            self._kill_postmaster()

    def pg_ctl(self, action, *args, timeout=90):
        """pg_ctl ACTION on the running cluster (restart -m fast, stop -m fast, start), keeping its
        port and data; waits for it to finish and fails the test if it does not."""
        argv = [pg_tool("pg_ctl"), "-D", self.data_dir, "-w", "-t", "60"]
        if action in ("start", "restart"):
            argv += ["-l", self.log_path]
        result = self._run_as_postgres(argv + [action] + list(args), timeout=timeout)
        if result.returncode != 0:
            raise TestFailure(f"pg_ctl {action} failed:\n{result.stdout}{self.log_tail()}")

    def _kill_postmaster(self):
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as f:
                pid = int(f.readline())
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    # -- direct access --
    def connect(self, dbname="postgres", user=SUPERUSER, password=SUPERUSER_PASSWORD, unix=True,
                autocommit=True, **kwargs):
        host = self.socket_dir if unix else self.host
        conn = psycopg2.connect(host=host, port=self.port, dbname=dbname, user=user,
                                password=password, connect_timeout=10, sslmode="disable", **kwargs)
        conn.autocommit = autocommit
        return conn

    def sql(self, statement, params=None, dbname=APP_DB):
        """Runs one statement as the superuser; returns all rows (or None for no result set)."""
        conn = self.connect(dbname=dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def backends(self, usename=None, datname=None):
        """Client backends other than the one asking: rows of dicts."""
        query = ("SELECT pid, usename, datname, state, application_name, query "
                 "FROM pg_stat_activity WHERE backend_type = 'client backend' "
                 "AND pid <> pg_backend_pid()")
        params = []
        if usename:
            query += " AND usename = %s"
            params.append(usename)
        if datname:
            query += " AND datname = %s"
            params.append(datname)
        rows = self.sql(query, params, dbname="postgres")
        keys = ("pid", "usename", "datname", "state", "application_name", "query")
        return [dict(zip(keys, row)) for row in rows]

    def count_backends(self, usename=None, datname=None):
        return len(self.backends(usename, datname))

    def terminate_backends(self, usename=None):
        for backend in self.backends(usename):
            self.sql("SELECT pg_terminate_backend(%s)", (backend["pid"],), dbname="postgres")

    def scram_verifier(self, role):
        rows = self.sql("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,),
                        dbname="postgres")
        return rows[0][0]

    def pgbench_database(self, dbname, scale):
        """A database owned by app, initialized with pgbench -i directly, once per cluster."""
        ready = self.__dict__.setdefault("_pgbench_ready", set())
        if dbname in ready:
            return
        self.sql(f"CREATE DATABASE {dbname} OWNER app", dbname="postgres")
        env = dict(self.env(), PGUSER="app", PGPASSWORD="app_pw")
        status, output = run_tool([pg_tool("pgbench"), "-i", "-q", "-s", str(scale), dbname], env,
                                  timeout=120)
        check_equal(status, 0, f"pgbench -i (direct) failed:\n{output[-2000:]}")
        ready.add(dbname)

    def database_line(self, dbname=APP_DB, user="app", password=None, unix=False, **extra):
        """A sluice [databases] value pointing at this cluster."""
        if password is None and user in ROLES:
            password = ROLES[user][0]
        host = self.socket_dir if unix else self.host
        parts = [f"host={host}", f"port={self.port}", f"dbname={dbname}", f"user={user}"]
        if password:
            parts.append(f"password={password}")
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    def env(self):
        """Environment for psql/pgbench talking to this cluster directly as the superuser."""
        env = dict(os.environ)
        env.update(PGHOST=self.socket_dir, PGPORT=str(self.port), PGUSER=SUPERUSER,
                   PGPASSWORD=SUPERUSER_PASSWORD, PGSSLMODE="disable", PGCONNECT_TIMEOUT="10")
        return env


# ---- sluice --------------------------------------------------------------------------------------

def unix_socket_listening(path):
    """Is a socket listening at path? The file alone exists from bind(), before listen(): a
    client connecting in between is refused. /proc/net/unix flags 00010000 mean listening."""
    try:
        with open("/proc/net/unix") as table:
            for line in table:
                fields = line.split()
                if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
                    return True
    except OSError:
        return os.path.exists(path)
    return False


def sluice_binary():
    explicit = os.environ.get("SLUICE_BIN")
    if explicit:
        return explicit
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "src", "sluice"))


def refuse_io_uring_setup():
    """In the child before exec: a seccomp filter that fails io_uring_setup with EPERM."""
    import ctypes
    import errno as errno_codes
    import struct
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    io_uring_setup = 425  # the same number on x86_64 and aarch64
    seccomp_ret_allow, seccomp_ret_errno = 0x7FFF0000, 0x00050000
    ld_nr, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    program = [(ld_nr, 0, 0, 0),                   # the syscall number
               (jeq, 0, 1, io_uring_setup),
               (ret, 0, 0, seccomp_ret_errno | errno_codes.EPERM),
               (ret, 0, 0, seccomp_ret_allow)]
    filters = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *f) for f in program))
    fprog = struct.pack("HxxxxxxQ", len(program), ctypes.addressof(filters))
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    fprog_buffer = ctypes.create_string_buffer(fprog)
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.addressof(fprog_buffer), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def default_users(cluster):
    """The auth file most tests use: each role with the kind of secret its name suggests."""
    return {
        "app": "app_pw",
        "scram_user": cluster.scram_verifier("scram_user"),
        "md5_user": md5_secret("md5_user", "md5_pw"),
        "trust_user": "",
    }


class Endpoint:
    """Where clients connect: a sluice, or PostgreSQL itself in direct mode."""

    host = "127.0.0.1"
    port = None
    unix_dir = None

    def __init__(self):
        self.connections = []
        self._lock = threading.Lock()

    def connect(self, dbname=APP_DB, user="app", password="app_pw", unix=False, autocommit=True,
                **kwargs):
        host = self.unix_dir if unix else self.host
        params = dict(host=host, port=self.port, dbname=dbname, user=user, connect_timeout=10,
                      sslmode="disable")
        if password is not None:
            params["password"] = password
        params.update(kwargs)
        conn = psycopg2.connect(**params)
        conn.autocommit = autocommit
        with self._lock:
            self.connections.append(conn)
        return conn

    def wire(self, unix=False, timeout=10):
        wire = Wire.connect(self.unix_socket_path() if unix else (self.host, self.port), timeout)
        with self._lock:
            self.connections.append(wire)
        return wire

    def unix_socket_path(self):
        return os.path.join(self.unix_dir, f".s.PGSQL.{self.port}")

    def env(self, user="app", password="app_pw", dbname=APP_DB, unix=False):
        env = dict(os.environ)
        env.update(PGHOST=self.unix_dir if unix else self.host, PGPORT=str(self.port), PGUSER=user,
                   PGDATABASE=dbname, PGSSLMODE="disable", PGCONNECT_TIMEOUT="10")
        if password is not None:
            env["PGPASSWORD"] = password
        else:
            env.pop("PGPASSWORD", None)
        return env

    def close_clients(self, wait=2.0):
        """Closes every client this endpoint handed out. A psycopg2 connection still running a
        query in another thread blocks close(), so give up waiting after a moment: stopping
        sluice (or resetting the cluster) ends those."""
        with self._lock:
            connections, self.connections = self.connections, []

        def close_all():
            for conn in connections:
                try:
                    conn.close()
                except Exception:
                    pass

        Background(close_all).wait(wait)


class DirectEndpoint(Endpoint):
    def __init__(self, cluster):
        super().__init__()
        self.cluster = cluster
        self.port = cluster.port
        self.unix_dir = cluster.socket_dir

    def start(self):
        return self

    def stop(self):
        self.close_clients()
        return 0

    def log_text(self):
        return ""


class Sluice(Endpoint):
    """One sluice process with its own config file, auth file, port, unix socket and log."""

    _counter = 0

    def __init__(self, cluster, base_dir, settings=None, databases=None, users=None):
        super().__init__()
        Sluice._counter += 1
        self.cluster = cluster
        self.dir = os.path.join(base_dir, f"sluice{Sluice._counter}")
        os.makedirs(self.dir)
        self.unix_dir = os.path.join(self.dir, "sock")
        os.makedirs(self.unix_dir)
        self.config_path = os.path.join(self.dir, "sluice.ini")
        self.auth_path = os.path.join(self.dir, "userlist.txt")
        self.log_path = os.path.join(self.dir, "sluice.log")
        self.port = free_port()
        self.proc = None
        self.exit_status = None
        self.killed = False
        self.settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": self.unix_dir,
            "auth_type": "scram-sha-256",
            "auth_file": self.auth_path,
            "pool_mode": "transaction",
            "default_pool_size": 5,
            "max_client_conn": 500,
            "query_wait_timeout": 30,
            "client_login_timeout": 15,
            "shutdown_timeout": 5,
            "log_connections": 1,
        }
        if WORKERS is not None:
            self.settings["workers"] = WORKERS
        self.settings.update(settings or {})
        self.databases = {APP_DB: cluster.database_line()} if cluster else {}
        self.databases.update(databases or {})
        self.users = users if users is not None else (default_users(cluster) if cluster else {})
        self.write_config()

    # -- files --
    def write_config(self, raw_text=None):
        with open(self.auth_path, "w") as f:
            for user, secret in self.users.items():
                f.write(f'"{user}" "{secret}"\n')
        if raw_text is None:
            lines = ["[sluice]"]
            lines += [f"{k} = {v}" for k, v in self.settings.items() if v is not None]
            lines += ["", "[databases]"]
            lines += [f"{k} = {v}" for k, v in self.databases.items() if v is not None]
            raw_text = "\n".join(lines) + "\n"
        with open(self.config_path, "w") as f:
            f.write(raw_text)

    def config_text(self):
        with open(self.config_path) as f:
            return f.read()

    # -- process --
    def start(self, wait=True, env=None, max_open_files=None, refuse_io_uring=False):
        """env: variables to add to sluice's environment (a value of None removes one).
        max_open_files: an RLIMIT_NOFILE for sluice, to run it out of descriptors.
        refuse_io_uring: io_uring_setup fails with EPERM, as under Docker's seccomp profile."""
        binary = sluice_binary()
        if not os.access(binary, os.X_OK):
            raise TestFailure(f"sluice binary not found or not executable: {binary}")
        process_env = None
        if env:
            process_env = dict(os.environ)
            for name, value in env.items():
                if value is None:
                    process_env.pop(name, None)
                else:
                    process_env[name] = str(value)
        limits = []
        if max_open_files:
            limits.append(lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                     (max_open_files, max_open_files)))
        if refuse_io_uring:
            limits.append(refuse_io_uring_setup)

        def limit_files():
            for limit in limits:
                limit()
        log = open(self.log_path, "ab")
        try:
            self.proc = _track(subprocess.Popen([binary, "-c", self.config_path], stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=log, start_new_session=True,
                                                env=process_env, preexec_fn=limit_files))
        finally:
            log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=15):
        deadline = time.monotonic() + timeout * TIMEOUT_SCALE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TestFailure(f"sluice exited during startup with status {self.proc.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    pass
                if not self.settings.get("unix_socket_dir"):
                    return
                if unix_socket_listening(self.unix_socket_path()):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TestFailure(f"sluice did not accept connections on port {self.port} within {timeout}s")

    def cpu_seconds(self):
        """User plus system CPU time sluice has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum):
        os.kill(self.proc.pid, signum)

    def reload(self):
        self.signal(signal.SIGHUP)

    def reload_and_wait(self, refused=False, timeout=10):
        """SIGHUP, then waits until sluice logs the reload as applied (refused: as refused, the
        running configuration kept), and fails on the other outcome. A reload is read on the
        loop's next turn: a client that comes before it still meets the old configuration."""
        text = self.log_text()
        applied, failed = text.count("configuration reloaded"), text.count("reload failed")
        self.reload()
        deadline = time.monotonic() + timeout * TIMEOUT_SCALE
        while time.monotonic() < deadline:
            text = self.log_text()
            if text.count("reload failed") > failed:
                if refused:
                    return
                raise TestFailure(f"sluice refused the reload:\n{self.log_tail(10)}")
            if text.count("configuration reloaded") > applied:
                if not refused:
                    return
                raise TestFailure(f"sluice applied a reload it should refuse:\n{self.log_tail(10)}")
            time.sleep(0.02)
        raise TestFailure(f"sluice did not log the reload within {timeout}s:\n{self.log_tail(10)}")

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=None):
        """SIGTERM, then SIGKILL after a bound; returns the exit status (negative: signal)."""
        self.close_clients()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            bound = timeout if timeout is not None else float(self.settings.get("shutdown_timeout") or 5) + 10
            try:
                self.signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait_exit(bound) is None:
                self.killed = True
                self.proc.kill()
                self.proc.wait(10)
        self.exit_status = self.proc.returncode
        return self.exit_status

    # -- log --
    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, lines=40):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def sanitizer_report(self):
        """The first sanitizer report in the log, up to its SUMMARY line (a ThreadSanitizer report
        holds two stacks and where each thread began), and how many more there are."""
        text = self.log_text()
        found = [(text.find(p), p) for p in SANITIZER_PATTERNS if p in text]
        if not found:
            return None
        index, pattern = min(found)
        start = text.rfind("\n", 0, max(index - 200, 0)) + 1
        summary = text.find("SUMMARY:", index)
        end = text.find("\n", summary) if summary >= 0 else -1
        if end < 0 or end - start > 12000:
            end = start + 12000
        excerpt = text[start:end]
        more = text.count(pattern) - 1
        if more > 0:
            excerpt += f"\n({more} more like it in {self.log_path}; SLUICE_IT_KEEP=1 keeps the file)"
        return excerpt


# ---- a raw protocol client -----------------------------------------------------------------------

class PgError(Exception):
    """An ErrorResponse, with its fields by code letter ('S', 'C', 'M', ...)."""

    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('S', '?')} {fields.get('C', '?')}: {fields.get('M', '')}")

    @property
    def sqlstate(self):
        return self.fields.get("C")

    @property
    def message(self):
        return self.fields.get("M", "")


class ConnectionClosed(Exception):
    pass


def parse_fields(payload):
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


def cstr(text):
    return text.encode() + b"\0"


def message(kind, payload=b""):
    return kind.encode() + struct.pack("!I", len(payload) + 4) + payload


def startup_packet(params, version=PROTOCOL_3_0):
    body = struct.pack("!I", version)
    for key, value in params.items():
        body += cstr(key) + cstr(value)
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def request_packet(code):
    return struct.pack("!II", 8, code)


def cancel_packet(pid, key):
    if isinstance(key, int):
        key = struct.pack("!I", key & 0xFFFFFFFF)
    body = struct.pack("!II", CANCEL_REQUEST_CODE, pid) + key
    return struct.pack("!I", len(body) + 4) + body


def parse_message(sql, name="", param_types=()):
    payload = cstr(name) + cstr(sql) + struct.pack("!H", len(param_types))
    payload += b"".join(struct.pack("!I", oid) for oid in param_types)
    return message("P", payload)


def bind_message(params=(), portal="", statement=""):
    payload = cstr(portal) + cstr(statement) + struct.pack("!H", 0) + struct.pack("!H", len(params))
    for value in params:
        if value is None:
            payload += struct.pack("!i", -1)
        else:
            data = str(value).encode()
            payload += struct.pack("!i", len(data)) + data
    payload += struct.pack("!H", 0)
    return message("B", payload)


def describe_message(kind="P", name=""):
    return message("D", kind.encode() + cstr(name))


def execute_message(portal="", max_rows=0):
    return message("E", cstr(portal) + struct.pack("!I", max_rows))


def sync_message():
    return message("S")


def flush_message():
    return message("H")


def query_message(sql):
    return message("Q", cstr(sql))


def terminate_message():
    return message("X")


class QueryResult:
    def __init__(self):
        self.rows = []
        self.tags = []
        self.errors = []
        self.notices = []
        self.messages = []
        self.status = None

    def first_value(self):
        return self.rows[0][0] if self.rows else None


class Wire:
    """A PostgreSQL protocol client over a plain socket, for what libpq will not send."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""
        self.user = None
        self.parameters = {}
        self.backend_key = None
        self.negotiate = None
        self.auth_requests = []
        self.sasl_mechanisms = None

    @classmethod
    def connect(cls, address, timeout=10):
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
        return cls(sock)

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Closes with a RST, like a process that died."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def _fill(self, n):
        while len(self.buffer) < n:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ConnectionClosed(f"connection closed with {len(self.buffer)} of {n} bytes read")
            self.buffer += chunk

    def read_byte(self):
        self._fill(1)
        byte, self.buffer = self.buffer[:1], self.buffer[1:]
        return byte

    def read_message(self):
        """Returns (type letter, payload); raises ConnectionClosed at EOF."""
        self._fill(5)
        kind = chr(self.buffer[0])
        length = struct.unpack("!I", self.buffer[1:5])[0]
        if length < 4 or length > 64 * 1024 * 1024:
            raise TestFailure(f"server sent message {kind!r} with impossible length {length}")
        self._fill(1 + length)
        payload = self.buffer[5:1 + length]
        self.buffer = self.buffer[1 + length:]
        return kind, payload

    def read_until_closed(self, timeout):
        """Reads everything until EOF; returns [(kind, payload)]; fails if still open at timeout."""
        deadline = time.monotonic() + timeout
        messages = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TestFailure(f"connection still open after {timeout}s; received "
                                  f"{[k for k, _ in messages]}")
            self.sock.settimeout(remaining)
            try:
                messages.append(self.read_message())
            except ConnectionClosed:
                return messages
            except socket.timeout:
                continue
            except OSError:
                return messages

    def is_closed_within(self, timeout):
        try:
            self.read_until_closed(timeout)
            return True
        except TestFailure:
            return False

    # -- startup and authentication --
    def send_startup(self, user, database=APP_DB, version=PROTOCOL_3_0, **params):
        self.user = user
        packet_params = {"user": user, "database": database}
        packet_params.update(params)
        self.send(startup_packet(packet_params, version))

    def login(self, user="app", password="app_pw", database=APP_DB, version=PROTOCOL_3_0, **params):
        self.send_startup(user, database, version, **params)
        return self.finish_login(password)

    def finish_login(self, password):
        """Answers authentication requests until ReadyForQuery; raises PgError on ErrorResponse."""
        scram = None
        while True:
            kind, payload = self.read_message()
            if kind == "R":
                code = struct.unpack("!I", payload[:4])[0]
                self.auth_requests.append(code)
                scram = self._answer_auth(code, payload[4:], password, scram)
            elif kind == "S":
                name, value = payload.split(b"\0")[:2]
                self.parameters[name.decode()] = value.decode()
            elif kind == "K":
                self.backend_key = (struct.unpack("!I", payload[:4])[0], payload[4:])
            elif kind == "v":
                self.negotiate = struct.unpack("!I", payload[:4])[0]
            elif kind == "E":
                raise PgError(parse_fields(payload))
            elif kind == "Z":
                return payload.decode()
            elif kind == "N":
                continue
            else:
                raise TestFailure(f"unexpected message {kind!r} during login")

    def _answer_auth(self, code, data, password, scram):
        if code == 0:
            return scram
        if code == 3:
            self.send(message("p", cstr(password or "")))
        elif code == 5:
            inner = hashlib.md5(((password or "") + self.user).encode()).hexdigest()
            outer = hashlib.md5(inner.encode() + data[:4]).hexdigest()
            self.send(message("p", cstr("md5" + outer)))
        elif code == 10:
            mechanisms = [m.decode() for m in data.split(b"\0") if m]
            self.sasl_mechanisms = mechanisms
            if "SCRAM-SHA-256" not in mechanisms:
                raise TestFailure(f"server offered SASL mechanisms {mechanisms} without SCRAM-SHA-256")
            scram = ScramClient(password or "")
            first = scram.client_first()
            self.send(message("p", cstr("SCRAM-SHA-256") + struct.pack("!i", len(first)) + first))
        elif code == 11:
            self.send(message("p", scram.client_final(data)))
        elif code == 12:
            scram.verify_server_final(data)
        else:
            raise TestFailure(f"unsupported authentication request {code}")
        return scram

    # -- queries --
    def read_until_ready(self, result=None):
        result = result or QueryResult()
        while True:
            kind, payload = self.read_message()
            result.messages.append((kind, payload))
            if kind == "D":
                result.rows.append(self._parse_row(payload))
            elif kind == "C":
                result.tags.append(payload.rstrip(b"\0").decode())
            elif kind == "E":
                result.errors.append(parse_fields(payload))
            elif kind == "N":
                result.notices.append(parse_fields(payload))
            elif kind == "S":
                name, value = payload.split(b"\0")[:2]
                self.parameters[name.decode()] = value.decode()
            elif kind == "Z":
                result.status = payload.decode()
                return result

    @staticmethod
    def _parse_row(payload):
        count = struct.unpack("!H", payload[:2])[0]
        offset, row = 2, []
        for _ in range(count):
            length = struct.unpack("!i", payload[offset:offset + 4])[0]
            offset += 4
            if length < 0:
                row.append(None)
            else:
                row.append(payload[offset:offset + length].decode())
                offset += length
        return tuple(row)

    def query(self, sql):
        """Simple query; returns a QueryResult (errors are in .errors, not raised)."""
        self.send(query_message(sql))
        return self.read_until_ready()

    def query_ok(self, sql):
        result = self.query(sql)
        if result.errors:
            raise PgError(result.errors[0])
        return result

    def extended(self, sql, params=(), describe=True):
        """Unnamed statement and portal: Parse, Bind, Describe, Execute, Sync in one write."""
        data = parse_message(sql) + bind_message(params)
        if describe:
            data += describe_message("P")
        data += execute_message() + sync_message()
        self.send(data)
        return self.read_until_ready()


class ScramClient:
    """The client half of SCRAM-SHA-256 (RFC 5802/7677) without channel binding."""

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"

    def client_first(self):
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first):
        server_first = server_first.decode()
        attrs = dict(item.split("=", 1) for item in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise TestFailure("SCRAM server nonce does not extend the client nonce")
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        self.auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, self.auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, data):
        text = data.decode()
        if not text.startswith("v="):
            raise TestFailure(f"SCRAM server-final has no verifier: {text!r}")
        expected = hmac.new(self.server_key, self.auth_message, hashlib.sha256).digest()
        if base64.b64decode(text[2:]) != expected:
            raise TestFailure("SCRAM server signature does not verify")


# ---- command-line clients ------------------------------------------------------------------------

def run_tool(argv, env, timeout=120):
    proc = _track(subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True))
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise TestFailure(f"{argv[0]} still running after {timeout}s:\n{output[-2000:]}")
    return proc.returncode, output


def run_pgbench(args, env, timeout=120):
    """Runs pgbench; returns (exit status, output, summary dict)."""
    status, output = run_tool([pg_tool("pgbench")] + list(args), env, timeout)
    return status, output, parse_pgbench(output)


def parse_pgbench(output):
    summary = {}
    patterns = {
        "processed": r"number of transactions actually processed: (\d+)",
        "failed": r"number of failed transactions: (\d+)",
        "tps": r"tps = ([\d.]+)",
        "latency_ms": r"latency average = ([\d.]+) ms",
    }
    for key, pattern in patterns.items():
        match = re.search(pattern, output)
        if match:
            summary[key] = float(match.group(1)) if "." in match.group(1) else int(match.group(1))
    return summary


class Psql:
    """An interactive psql process fed through a pipe, to hold a session open and then kill it."""

    def __init__(self, env):
        self.proc = _track(subprocess.Popen(
            [pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=0", "-At"], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1))

    def run_until_marker(self, sql, timeout=15):
        """Sends sql, then waits until psql has executed it (all output up to a marker)."""
        marker = f"marker-{os.urandom(4).hex()}"
        self.proc.stdin.write(sql.rstrip() + "\n\\echo " + marker + "\n")
        self.proc.stdin.flush()
        lines = []
        result = Background(self._read_until, marker, lines)
        if not result.wait(timeout):
            raise TestFailure(f"psql did not finish {sql!r} within {timeout}s: {lines}")
        return result.result(0)

    def _read_until(self, marker, lines):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise TestFailure(f"psql exited: {''.join(lines)}")
            if line.strip() == marker:
                return "".join(lines)
            lines.append(line)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


# ---- the TAP runner ------------------------------------------------------------------------------

class TestCase:
    def __init__(self, name, fn, timeout, sluice_only, todo=None):
        self.name = name
        self.fn = fn
        self.timeout = timeout
        self.sluice_only = sluice_only
        self.todo = todo


class Context:
    """What a test function receives: the cluster and factories for things cleaned up after it."""

    def __init__(self, suite):
        self._suite = suite
        self.endpoints = []
        self.notes = []
        self.direct = DIRECT_MODE

    @property
    def cluster(self):
        return self._suite.cluster()

    def sluice(self, settings=None, databases=None, users=None, start=True):
        """A sluice in front of the cluster (in direct mode: the cluster itself)."""
        cluster = self.cluster
        if DIRECT_MODE:
            endpoint = DirectEndpoint(cluster)
        else:
            endpoint = Sluice(cluster, self._suite.base_dir(), settings, databases, users)
        self.endpoints.append(endpoint)
        if start:
            endpoint.start()
        return endpoint

    def sluice_without_cluster(self, config_text):
        endpoint = Sluice(None, self._suite.base_dir())
        endpoint.write_config(config_text)
        self.endpoints.append(endpoint)
        return endpoint

    def certificates(self):
        """A directory with the test certificates (make_certificates), shared by the file's tests."""
        return make_certificates(os.path.join(self._suite.base_dir(), "certs"))

    def note(self, text):
        self.notes.append(str(text))

    def teardown(self):
        """Stops everything; returns problems found with the sluices (crashes, sanitizer reports)."""
        problems = []
        for endpoint in self.endpoints:
            if not isinstance(endpoint, Sluice):
                endpoint.stop()
                continue
            died_early = endpoint.proc is not None and endpoint.proc.poll() is not None
            status = endpoint.stop()
            report = endpoint.sanitizer_report()
            if report:
                problems.append("sanitizer report in sluice log:\n" + report)
            if status is not None and status < 0 and not endpoint.killed and status != -signal.SIGTERM:
                problems.append(f"sluice died with signal {-status}"
                                f"{' before the test ended' if died_early else ''}")
        return problems


class Suite:
    """The tests of one file. Use @suite.test("behaviour"), then suite.run() at the bottom."""

    def __init__(self):
        self.tests = []
        self._cluster = None
        self._cluster_error = None
        self._base_dir = None
        self._cluster_lock = threading.Lock()

    def test(self, name, timeout=60, sluice_only=False, todo=None):
        """todo: why a known defect makes this test fail; it then reports "# TODO reason", which
        automake counts as XFAIL (and as XPASS, an error, once the defect is fixed)."""
        def register(fn):
            self.tests.append(TestCase(name, fn, timeout, sluice_only, todo))
            return fn
        return register

    def base_dir(self):
        if self._base_dir is None:
            self._base_dir = tempfile.mkdtemp(prefix="sluice-it-", dir=_scratch_root())
            os.chmod(self._base_dir, 0o755)
        return self._base_dir

    def cluster(self):
        with self._cluster_lock:
            if self._cluster_error:
                raise TestFailure("PostgreSQL cluster could not be started:\n" + self._cluster_error)
            if self._cluster is None:
                cluster = Cluster(os.path.join(self.base_dir(), "pg"))
                os.makedirs(cluster.base_dir)
                try:
                    cluster.start()
                except Exception as e:
                    cluster.stop()
                    self._cluster_error = str(e)
                    raise TestFailure("PostgreSQL cluster could not be started:\n" + str(e))
                self._cluster = cluster
            return self._cluster

    def cleanup(self):
        _kill_tracked()
        if self._cluster:
            self._cluster.stop()
            self._cluster = None
        if self._base_dir and not os.environ.get("SLUICE_IT_KEEP"):
            shutil.rmtree(self._base_dir, ignore_errors=True)
        elif self._base_dir:
            print(f"# scratch directory kept: {self._base_dir}", flush=True)

    def run(self):
        atexit.register(self.cleanup)
        signal.signal(signal.SIGTERM, _on_sigterm)
        only = os.environ.get("SLUICE_IT_ONLY")
        number = 0
        for case in self.tests:
            if only and only not in case.name:
                continue
            number += 1
            self._run_one(number, case)
        print(f"1..{number}", flush=True)
        self.cleanup()
        # The verdict is in the TAP stream; the automake driver would count a non-zero exit as
        # one more (ERROR) result. A non-zero exit means the runner itself broke.
        return 0

    def _run_one(self, number, case):
        if case.sluice_only and DIRECT_MODE:
            _emit(f"ok {number} - {_tap_name(case.name)} # SKIP needs sluice (direct mode)")
            return True
        context = Context(self)
        timeout = case.timeout * TIMEOUT_SCALE
        call = Background(case.fn, context)
        finished = call.wait(timeout)
        diagnostics = []
        outcome = "pass"
        if not finished:
            outcome = "fail"
            diagnostics.append(f"timed out after {timeout:.0f}s; the test was at:")
            frame = sys._current_frames().get(call._thread.ident)
            if frame is not None:
                diagnostics += "".join(traceback.format_stack(frame)[-6:]).splitlines()
        elif isinstance(call._error, Skip):
            outcome = "skip"
        elif call._error is not None:
            outcome = "fail"
            diagnostics += _describe_error(call._error)
        try:
            problems = context.teardown()
        except Exception as e:
            problems = [f"teardown failed: {e}"]
        if problems and outcome != "skip":
            outcome = "fail"
            for problem in problems:
                diagnostics += problem.splitlines()
        self._reset_cluster()
        if outcome == "skip":
            # automake's tap-driver counts "ok N - name # SKIP reason" as SKIP (one line).
            reason = " ".join(str(call._error).split()) or "no reason given"
            _emit(f"ok {number} - {_tap_name(case.name)} # SKIP {reason}")
            return True
        todo = f" # TODO {' '.join(case.todo.split())}" if case.todo else ""
        if outcome == "pass":
            _emit(f"ok {number} - {_tap_name(case.name)}{todo}")
            for line in context.notes:
                for part in line.splitlines():
                    _emit(f"# {part}")
            return True
        _emit(f"not ok {number} - {_tap_name(case.name)}{todo}")
        for line in diagnostics + context.notes:
            _emit(f"# {line}")
        for endpoint in context.endpoints:
            if isinstance(endpoint, Sluice):
                _emit(f"# --- {endpoint.log_path} (last lines) ---")
                for line in endpoint.log_tail().splitlines():
                    _emit(f"#   {line}")
        return False

    def _reset_cluster(self):
        """Ends any backend a test left behind, so the next test starts from a quiet cluster."""
        if self._cluster is None:
            return
        try:
            for role in ROLES:
                self._cluster.terminate_backends(role)
        except Exception as e:
            _emit(f"# could not reset the cluster: {e}")


def _describe_error(error):
    lines = [f"{type(error).__name__}: {error}".rstrip()]
    if isinstance(error, TestFailure):
        tb = traceback.extract_tb(error.__traceback__)
        frames = [f for f in tb if os.path.basename(f.filename).startswith("test_")]
        for frame in frames[-2:]:
            lines.append(f"at {os.path.basename(frame.filename)}:{frame.lineno}: {frame.line}")
    else:
        lines += "".join(traceback.format_exception(type(error), error, error.__traceback__)[-8:]).splitlines()
    return [line for chunk in lines for line in str(chunk).splitlines()]


def _emit(line):
    print(line, flush=True)


def _tap_name(name):
    """A test's name as a TAP description: one line, and a '#' escaped so that the driver does not
    read "# skip ..." or "# todo ..." in a name as a directive."""
    return " ".join(name.split()).replace("#", "\\#")


# ---- assertions about PostgreSQL errors ----------------------------------------------------------

def expect_pg_error(fn, sqlstates, what):
    """Calls fn(); it must raise a psycopg2 error or PgError whose SQLSTATE is in sqlstates
    (or, for psycopg2 connection errors without a SQLSTATE, any OperationalError if sqlstates is
    None). Returns the exception."""
    if isinstance(sqlstates, str):
        sqlstates = (sqlstates,)
    try:
        fn()
    except PgError as e:
        if sqlstates and e.sqlstate not in sqlstates:
            raise TestFailure(f"{what}: got SQLSTATE {e.sqlstate} ({e.message}), want {sqlstates}")
        return e
    except psycopg2.Error as e:
        if sqlstates and e.pgcode not in sqlstates:
            raise TestFailure(f"{what}: got SQLSTATE {e.pgcode} ({str(e).strip()}), want {sqlstates}")
        return e
    raise TestFailure(f"{what}: succeeded, want an error {sqlstates}")


def error_messages(messages):
    return [parse_fields(payload) for kind, payload in messages if kind == "E"]


# ---- watching a run from outside -----------------------------------------------------------------

def one_value(conn, sql, params=None):
    """The first column of the first row of a query on a psycopg2 connection."""
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


def console(sluice, who=ADMIN, dbname="sluice"):
    """A connection to sluice's admin console (the pseudo-database "sluice") as who = (user,
    password); who must be in admin_users or stats_users for SHOW to work."""
    return sluice.connect(dbname=dbname, user=who[0], password=who[1])


def show(admin, subject):
    """SHOW subject on a console connection: its rows as dicts by column name."""
    with admin.cursor() as cur:
        cur.execute(f"SHOW {subject}")
        names = [d.name for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def local_port(conn):
    """The client side's TCP port of a connection (a Wire, or a psycopg2/psycopg connection): the
    port column of its row in SHOW CLIENTS."""
    sock = getattr(conn, "sock", None)
    if sock is not None:
        return sock.getsockname()[1]
    with socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as dup:
        return dup.getsockname()[1]


class BackendSampler:
    """Counts backends in pg_stat_activity (cluster.backends' filter) every interval seconds from
    one direct connection, in a thread, until stop(). max_since(t) is the most seen at once from
    monotonic time t on."""

    def __init__(self, cluster, usename=None, datname=None, interval=0.05):
        self.samples = []  # (monotonic time, count)
        self._stop = threading.Event()
        self._conn = cluster.connect()
        query = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                 "AND pid <> pg_backend_pid()")
        self._params = []
        for column, value in (("usename", usename), ("datname", datname)):
            if value:
                query += f" AND {column} = %s"
                self._params.append(value)
        self._query = query
        self._interval = interval
        self._thread = Background(self._run)

    def _run(self):
        with self._conn.cursor() as cur:
            while not self._stop.is_set():
                cur.execute(self._query, self._params)
                self.samples.append((time.monotonic(), cur.fetchone()[0]))
                self._stop.wait(self._interval)

    def max_since(self, since=0.0):
        return max((count for at, count in list(self.samples) if at >= since), default=0)

    def stop(self):
        """Stops sampling; returns the most backends seen at once."""
        self._stop.set()
        try:
            self._thread.result(10)
        finally:
            self._conn.close()
        return self.max_since()
