#!/usr/bin/env python3
"""
The sluice benchmark: direct Postgres 15, PgBouncer and sluice side by side, interleaved.

Run it through bench/run, which installs what is missing first. See bench/README.md.
Everything it starts is recorded by PID in bench/work/run.pids and stopped by PID when it ends,
on error, or on Ctrl-C; bench/run stops whatever is still listed there if this process dies.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import pwd
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
WORK = os.path.join(BENCH, "work")
PIDFILE = os.path.join(WORK, "run.pids")
# The PostgreSQL on PATH (a bundle unpacked on a bare machine puts its bin/ there), else Debian's 15.
PGBIN = os.path.dirname(os.path.realpath(shutil.which("postgres") or "/usr/lib/postgresql/15/bin/postgres"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

TARGETS = ["direct", "pgbouncer", "sluice"]
TARGET_LABEL = {"direct": "Postgres (direct)", "pgbouncer": "PgBouncer", "sluice": "sluice"}
# The scaling and workers-cost suites' targets: a kind of server (direct, pgbouncer, sluice), the
# lines added to its configuration, and for PgBouncer how many processes share the port.
VARIANTS = {
    "direct": dict(kind="direct"),
    "pgbouncer": dict(kind="pgbouncer"),
    "pgbouncer-xP": dict(kind="pgbouncer", settings=["so_reuseport = 1"], procs="P"),
    "sluice-w1": dict(kind="sluice", settings=["workers = 1"]),
    "sluice-auto": dict(kind="sluice", settings=["workers = auto"]),
    "sluice-w2": dict(kind="sluice", settings=["workers = 2"]),
    # The same with every connection placed by the kernel's hash of addresses, not by CPU.
    "sluice-w2-hash": dict(kind="sluice", settings=["workers = 2", "steer_by_cpu = off"]),
    # Two processes of one worker each on one port, each with half the pool: what a second event
    # loop costs with nothing shared, against which workers=2's cost of sharing one pool is read.
    "sluice-2p": dict(kind="sluice", settings=["workers = 1", "so_reuseport = 1"], procs=2),
}
TARGET_LABEL.update({"pgbouncer-xP": "PgBouncer xP (so_reuseport)", "sluice-w1": "sluice workers=1",
                     "sluice-auto": "sluice workers=auto", "sluice-w2": "sluice workers=2",
                     "sluice-w2-hash": "sluice workers=2, steer_by_cpu=off",
                     "sluice-2p": "sluice x2 processes, workers=1 (so_reuseport)"})
SCALING_TARGETS = ["direct", "pgbouncer", "pgbouncer-xP", "sluice-w1", "sluice-auto"]
WORKERS_COST_TARGETS = ["sluice-w1", "sluice-w2", "sluice-w2-hash", "sluice-2p"]
POOL_SIZE = 20
MAX_CLIENT_CONN = 12000
PASSWORD = "bench-secret-pw"
TOKEN_KEY_ID = "AKIDSLUICEBENCH0001"
TOKEN_SECRET = "benchSecretKey/For+Token0000000000000000"
TOKEN_REGION = "us-east-1"

# name: description, pgbench arguments, how clients log in, TLS, which targets run it
SCENARIOS = {
    "a": dict(desc="steady select-only", args=["-S", "-c", "50", "-j", "2"], auth="trust"),
    "a-tls": dict(desc="steady select-only over TLS (sslmode=require, ECDSA P-256 cert)",
                  args=["-S", "-c", "50", "-j", "2"], auth="trust", tls=True),
    "b-trust": dict(desc="new connection per transaction, trust on every hop",
                    args=["-S", "-C", "-c", "50", "-j", "4"], auth="trust"),
    "b-scram-plain": dict(desc="new connection per transaction, SCRAM, plain passwords in auth_file",
                          args=["-S", "-C", "-c", "50", "-j", "4"], auth="scram-plain"),
    "b-scram-verifier": dict(desc="new connection per transaction, SCRAM, SCRAM verifiers in auth_file",
                             args=["-S", "-C", "-c", "50", "-j", "4"], auth="scram-verifier"),
    "b-tls": dict(desc="new connection per transaction, sslmode=require, trust, ECDSA P-256 cert",
                  args=["-S", "-C", "-c", "50", "-j", "4"], auth="trust", tls=True),
    "b-token": dict(desc="new connection per transaction, token auth over TLS (sluice only)",
                    args=["-S", "-C", "-c", "50", "-j", "4"], auth="token", tls=True,
                    targets=["sluice"]),
    "c": dict(desc="1,000 clients over a pool of 20", args=["-S", "-c", "1000", "-j", "2"], auth="trust"),
    "d": dict(desc="TPC-B (pgbench default script)", args=["-c", "20", "-j", "2"], auth="trust"),
    "e-extended": dict(desc="select-only, extended protocol", args=["-S", "-M", "extended", "-c", "50", "-j", "2"],
                       auth="trust"),
    "e-prepared": dict(desc="select-only, prepared statements", args=["-S", "-M", "prepared", "-c", "100", "-j", "2"],
                       auth="trust"),
    "f": dict(desc="idle clients: proxy RSS per connected idle client", args=None, auth="trust",
              targets=["pgbouncer", "sluice"]),
    # The scaling suite (bench/run --scaling): every target started afresh for each run, one at a
    # time, so that the backends pg_stat_activity counts are that target's; {jobs} is pgbench's -j.
    "s-steady": dict(desc="steady select-only, 256 clients", args=["-S", "-c", "256", "-j", "{jobs}"], auth="trust",
                     suite="scaling"),
    "s-connect": dict(desc="new connection per transaction, 64 clients, trust",
                      args=["-S", "-C", "-c", "64", "-j", "{jobs}"], auth="trust", suite="scaling"),
    "s-connect-tls": dict(desc="new connection per transaction, 64 clients, sslmode=require, trust",
                          args=["-S", "-C", "-c", "64", "-j", "{jobs}"], auth="trust", tls=True, suite="scaling"),
    # The workers-cost suite (bench/run --workers-cost): sluice with one worker against two.
    "w-steady": dict(desc="steady select-only, 50 clients", args=["-S", "-c", "50", "-j", "2"], auth="trust",
                     suite="workers-cost"),
    "w-connect": dict(desc="new connection per transaction, 50 clients, trust", args=["-S", "-C", "-c", "50", "-j", "4"],
                      auth="trust", suite="workers-cost"),
}
for _s in SCENARIOS.values():
    if "suite" in _s:
        _s.update(fresh=True, targets=SCALING_TARGETS if _s["suite"] == "scaling" else WORKERS_COST_TARGETS)
ORDER = [k for k, v in SCENARIOS.items() if "suite" not in v]
SUITES = {"scaling": [k for k, v in SCENARIOS.items() if v.get("suite") == "scaling"],
          "workers-cost": [k for k, v in SCENARIOS.items() if v.get("suite") == "workers-cost"]}
# Known not to work: 1,000 clients exceed max_connections; PgBouncer 1.18 has no protocol-level
# prepared statements in transaction mode.
EXPECTED_FAILURES = {
    ("c", "direct"): "1,000 clients are more than max_connections = 300",
    ("e-prepared", "pgbouncer"): "PgBouncer 1.18 does not carry prepared statements across server connections "
                                 "in transaction mode",
}

MODES = {
    "smoke": dict(duration=1, rounds=1, scale=1, idle_n=200, idle_rounds=1,
                  scenarios=["a", "b-trust", "f"]),
    "quick": dict(duration=2, rounds=3, scale=10, idle_n=2000, idle_rounds=1,
                  scenarios=["a", "b-trust", "b-scram-plain", "b-tls", "c", "f"]),
    "full": dict(duration=5, rounds=3, scale=10, idle_n=10000, idle_rounds=3,
                 scenarios=ORDER),
}
# The suites' pgbench -T and rounds per mode. Scaling, full: 15 runs of 20 s, about 6 minutes on a
# 16-core machine with set-up; quick: about 2 minutes on two cores.
SUITE_MODES = {
    "scaling": {"full": dict(duration=20, rounds=1), "quick": dict(duration=3, rounds=1),
                "smoke": dict(duration=2, rounds=1)},  # 256 clients take over a second to connect here
    "workers-cost": {"full": dict(duration=5, rounds=3), "quick": dict(duration=3, rounds=3),
                     "smoke": dict(duration=1, rounds=1)},
}

# What the proxy is asked to reach against PgBouncer (same run, medians).
GOALS = {
    "a": dict(tps_p=1.07, cpu_p=0.7),
    "b-trust": dict(tps_p=1.15, tps_d=10.0, cpu_p=0.5, conn_p=0.8),
    "b-scram-plain": dict(tps_p=1.8, cpu_p=0.05),
    "b-scram-verifier": dict(tps_p=1.0, cpu_p=0.8),
    "b-tls": dict(tps_p=1.2, cpu_p=0.5),
    "c": dict(tps_p=1.05, cpu_p=0.8, p99_p=1.0, zero_fail=True),
    "d": dict(cpu_p=0.8),
    "e-extended": dict(cpu_p=0.8),
    "e-prepared": dict(cpu_p=0.8),
    "f": dict(kib_per_client=2.0),
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Failure(Exception):
    pass


class Interrupted(BaseException):
    pass


def _on_signal(signum, frame):
    raise Interrupted(f"signal {signum}")


# ---------------------------------------------------------------------------------------------
# processes started by the harness, tracked by PID


class Procs:
    def __init__(self):
        self.live = {}  # pid -> (name, Popen)
        os.makedirs(WORK, exist_ok=True)
        self._write()

    def _write(self):
        with open(PIDFILE + ".tmp", "w") as f:
            for pid, (name, _) in self.live.items():
                f.write(f"{pid} {name}\n")
        os.replace(PIDFILE + ".tmp", PIDFILE)

    def add(self, name, popen):
        self.live[popen.pid] = (name, popen)
        self._write()

    def alive(self, popen):
        return popen.poll() is None

    def stop(self, popen, sig=signal.SIGTERM, timeout=10.0, then=(signal.SIGKILL,)):
        if popen.pid not in self.live:
            return
        name = self.live[popen.pid][0]
        sigs = [sig] + list(then)
        for i, s in enumerate(sigs):
            if popen.poll() is not None:
                break
            try:
                os.kill(popen.pid, s)
            except ProcessLookupError:
                break
            try:
                popen.wait(timeout=timeout if i < len(sigs) - 1 else 10)
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {popen.pid}) did not stop on signal {s}")
        del self.live[popen.pid]
        self._write()

    def stop_all(self):
        for pid, (name, popen) in reversed(list(self.live.items())):
            # Postgres: fast shutdown on SIGINT; everything else: SIGTERM.
            if name == "postgres":
                self.stop(popen, signal.SIGINT, 20, (signal.SIGQUIT, signal.SIGKILL))
            else:
                self.stop(popen, signal.SIGTERM, 5)
        try:
            os.unlink(PIDFILE)
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------------------------
# /proc readings


def proc_table():
    """pid -> (ppid, utime+stime+cutime+cstime in ticks)"""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        table[int(d)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
    return table


def tree_pids(root, table):
    kids = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in table:
            out.append(p)
            todo.extend(kids.get(p, []))
    return out


def tree_cpu_seconds(root, table=None):
    """CPU of a process, its live descendants and every descendant it has reaped."""
    table = table or proc_table()
    return sum(table[p][1] for p in tree_pids(root, table)) / CLK_TCK


def tree_mem_kib(root, field):
    total = 0
    for p in tree_pids(root, proc_table()):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def threads(pid):
    """A process's threads, less the kernel's io_uring workers (iou-wrk-*, iou-sqp-*): for sluice,
    its event-loop workers and the threads it starts itself."""
    n = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    n += not f.read().startswith("iou-")
            except OSError:
                pass
    except OSError:
        return None
    return n


# ---------------------------------------------------------------------------------------------
# helpers


def drop_to(user):
    """Popen arguments that run the child as `user`, without supplementary groups."""
    if sys.version_info >= (3, 9):
        return dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])

    def drop():  # an older python3 on a bare machine: the same, by hand, in the child
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    return dict(preexec_fn=drop)


def run(argv, check=True, user=None, env=None, cwd=None, timeout=600, quiet=True):
    kw = {}
    if user is not None:
        kw.update(drop_to(user))
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd,
                       timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise Failure(f"{' '.join(map(shlex.quote, argv))} exited {p.returncode}:\n{p.stdout[-3000:]}")
    return p


def ephemeral_ports():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = map(int, f.read().split())
        return range(lo, hi + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def free_port(preferred):
    """A free port at or above `preferred`, outside the kernel's ephemeral range: a port in that
    range can be taken at any moment as the source port of some outgoing connection (10,000 of
    them in scenario f), and a proxy restarted on it would then fail to listen."""
    eph = ephemeral_ports()
    for port in range(preferred, preferred + 200):
        if port in eph or port > 65535:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise Failure(f"no free port near {preferred}")


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:]).strip()
    except OSError:
        return ""


def one_line(text, limit=160):
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def kind_of(target):
    """direct, pgbouncer or sluice: the program behind a target or variant."""
    return VARIANTS.get(target, {}).get("kind", target)


def procs_of(variant, pgbouncer_procs):
    """How many processes a variant runs on its port: P (cores/4) for PgBouncer xP, else its own
    count (1 by default)."""
    n = variant.get("procs", 1)
    return pgbouncer_procs if n == "P" else n


def members(proxy):
    """Every process of a proxy: PgBouncer with so_reuseport is several."""
    return getattr(proxy, "group", [proxy])


def unprivileged_user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        if name != "postgres":
            raise
        return pwd.getpwnam("nobody")  # a bare machine without PostgreSQL's package has no postgres user


class BackendSampler:
    """The number of client backends connected to database bench, read every `every` seconds
    during a run through one psql session that stays open (a new connection per sample would be
    one more backend and one more fork), keeping the highest count seen."""

    QUERY = ("select count(*) from pg_stat_activity where datname = 'bench' "
             "and backend_type = 'client backend';\n")

    def __init__(self, bench):
        self.p = subprocess.Popen(["psql", "-X", "-At", "-h", bench.tmp, "-p", str(bench.pgport), "-U", "postgres",
                                   "-d", "postgres"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1)
        bench.procs.add("psql", self.p)
        self.stop_flag = threading.Event()
        self.thread = None
        self.peak = None

    def count(self):
        try:
            self.p.stdin.write(self.QUERY)
            self.p.stdin.flush()
        except OSError:
            return None
        rd, _, _ = select.select([self.p.stdout], [], [], 5.0)
        line = self.p.stdout.readline().strip() if rd else ""
        return int(line) if line.isdigit() else None

    def wait_empty(self, timeout=15.0):
        """Until the previous target's backends have gone (and been reaped: a backend reaped during
        the next run would bring all its CPU time into that run's Postgres figure)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() == 0:
                time.sleep(0.3)
                return True
            time.sleep(0.1)
        return False

    def start(self, every=0.5):
        self.peak = None
        self.stop_flag.clear()

        def loop():
            while True:
                n = self.count()
                if n is not None:
                    self.peak = n if self.peak is None else max(self.peak, n)
                if self.stop_flag.wait(every):
                    return

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_flag.set()
        self.thread.join()
        return self.peak


# ---------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, opts):
        self.o = opts
        self.procs = Procs()
        self.tmp = None
        self.is_root = os.geteuid() == 0
        self.user = unprivileged_user(opts.run_as) if self.is_root else None
        self.results = []  # one dict per run
        self.unavailable = {}  # (scenario, target) -> reason
        self.notes = []
        self.commands = {}  # scenario -> command template
        self.configs = {}
        self.sluice_bin = None
        self.token_bin = None
        self.sluice_reason = None
        self.build_cmds = []
        self.sampler = None

    # ------------------------------------------------------------------ setup
    def raise_nofile(self):
        want = 65536
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        log(f"open files limit: {self.nofile}")

    def chown(self, path):
        if self.user:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def spawn(self, name, argv, logpath, env=None, as_user=True):
        kw = {}
        if self.user and as_user:
            kw.update(drop_to(self.user))
        logf = open(logpath, "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                             start_new_session=True, env=env, cwd=self.tmp, **kw)
        logf.close()
        self.procs.add(name, p)
        return p

    def build_sluice(self):
        if self.o.no_sluice:
            self.sluice_reason = "not run (--no-sluice)"
            return
        if self.o.sluice_bin:
            self.sluice_bin = os.path.abspath(self.o.sluice_bin)
            tok = os.path.join(os.path.dirname(os.path.dirname(self.sluice_bin)), "tools", "sluice-token")
            self.token_bin = tok if os.access(tok, os.X_OK) else None
            return
        src = os.path.join(WORK, "sluice-build")
        os.makedirs(src, exist_ok=True)
        try:
            files = self.source_files()
        except Failure as e:
            self.sluice_reason = f"not available: {e}"
            return
        if "src/main.c" not in files:
            self.sluice_reason = "not available: src/main.c does not exist yet"
            return
        changed = 0
        for rel, (data, mode) in files.items():
            d = os.path.join(src, rel)
            try:
                with open(d, "rb") as f:
                    same = f.read() == data
            except OSError:
                same = False
            if not same:
                os.makedirs(os.path.dirname(d), exist_ok=True)
                with open(d, "wb") as f:
                    f.write(data)
                os.chmod(d, mode)
                changed += 1
        buildlog = os.path.join(WORK, "sluice-build.log")
        t0 = time.time()
        try:
            with open(buildlog, "w") as bl:
                def step(argv):
                    self.build_cmds.append(" ".join(map(shlex.quote, argv)))
                    bl.write(f"$ {' '.join(argv)}\n")
                    bl.flush()
                    r = subprocess.run(argv, cwd=src, stdout=bl, stderr=subprocess.STDOUT)
                    if r.returncode != 0:
                        raise Failure(f"{' '.join(argv)} exited {r.returncode}")
                # Regenerate and reconfigure whenever the build description changed (or the last try failed).
                import hashlib
                desc = hashlib.sha256(b"".join(files[k][0] for k in sorted(files)
                                               if k == "configure.ac" or k.endswith(".am") or k.startswith("m4/")))
                conf_args = ["./configure", "CFLAGS=-O2 -g", "--disable-werror", "--disable-sanitizers"]
                desc.update(" ".join(conf_args).encode())
                stamp = os.path.join(src, ".bench-configured")
                try:
                    with open(stamp) as f:
                        fresh = f.read() == desc.hexdigest()
                except OSError:
                    fresh = False
                if not fresh:
                    if os.path.exists(stamp):
                        os.unlink(stamp)
                    step(["./autogen.sh"])
                    step(conf_args)
                    with open(stamp, "w") as f:
                        f.write(desc.hexdigest())
                step(["make", f"-j{os.cpu_count() or 2}", "src/sluice"])
        except Failure as e:
            lines = tail(buildlog, 40).splitlines()
            errs = [l for l in lines if re.search(r"\berror\b", l, re.I) and not l.startswith("$ ")] or lines[-1:]
            self.sluice_reason = f"not available: build failed at `{e}`: {one_line(errs[0] if errs else '', 200)}"
            log(f"sluice {self.sluice_reason}")
            return
        self.sluice_bin = os.path.join(src, "src", "sluice")
        log(f"sluice built in {time.time() - t0:.0f} s ({changed} files copied) -> {self.sluice_bin}")
        if os.path.exists(os.path.join(src, "tools", "sluice-token.c")):
            with open(buildlog, "a") as bl:
                r = subprocess.run(["make", f"-j{os.cpu_count() or 2}", "tools/sluice-token"], cwd=src, stdout=bl,
                                   stderr=subprocess.STDOUT)
            if r.returncode == 0:
                self.token_bin = os.path.join(src, "tools", "sluice-token")

    def source_files(self):
        """rel path -> (bytes, mode): the work tree (tracked and untracked, not ignored), or with
        --commit a committed revision. bench/ is left out."""
        files = {}
        if self.o.commit:
            import io
            import tarfile
            r = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", self.o.commit], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
            if r.returncode != 0:
                raise Failure(f"git archive {self.o.commit}: {r.stderr.decode().strip()}")
            with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
                for m in tar.getmembers():
                    if m.isfile() and not m.name.startswith("bench/"):
                        files[m.name] = (tar.extractfile(m).read(), m.mode & 0o777)
            return files
        try:
            out = subprocess.run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True).stdout.decode()
            names = [f for f in out.split("\0") if f]
        except (subprocess.CalledProcessError, FileNotFoundError):
            names = []
            for root, dirs, fnames in os.walk(REPO):
                dirs[:] = [d for d in dirs if d not in (".git", "autom4te.cache", ".deps")]
                for n in fnames:
                    if not n.endswith((".o", ".a")):
                        names.append(os.path.relpath(os.path.join(root, n), REPO))
        for rel in names:
            path = os.path.join(REPO, rel)
            if rel.startswith("bench/") or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                files[rel] = (f.read(), os.stat(path).st_mode & 0o777)
        return files

    def git_commit(self):
        if self.o.commit:
            return subprocess.run(["git", "-C", REPO, "rev-parse", "--short=12", self.o.commit],
                                  stdout=subprocess.PIPE, text=True).stdout.strip() or self.o.commit
        try:
            c = subprocess.run(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                    ":!bench"], stdout=subprocess.PIPE, text=True).stdout.strip()
            return c + (" (with uncommitted changes)" if dirty else "")
        except FileNotFoundError:
            return "unknown"

    def setup_postgres(self):
        self.tmp = tempfile.mkdtemp(prefix="sluice-bench-", dir=self.o.tmpdir)
        if not self.o.keep:
            with open(os.path.join(WORK, "run.tmpdir"), "w") as f:  # for bench/run's trap
                f.write(self.tmp + "\n")
        os.chmod(self.tmp, 0o755)
        self.chown(self.tmp)
        log(f"scratch directory {self.tmp}")
        self.pgport = free_port(self.o.base_port)
        self.pbport = free_port(self.pgport + 1)
        self.slport = free_port(self.pbport + 1)
        data = os.path.join(self.tmp, "pgdata")
        # Certificate: ECDSA P-256, self-signed, for Postgres, PgBouncer and sluice alike.
        self.cert = os.path.join(self.tmp, "server.crt")
        self.key = os.path.join(self.tmp, "server.key")
        # -config: a bare machine may have no openssl.cnf, and req needs one.
        cnf = os.path.join(self.tmp, "openssl-req.cnf")
        with open(cnf, "w") as f:
            f.write("[req]\ndistinguished_name = dn\n[dn]\n")
        cmd = ["openssl", "req", "-config", cnf, "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
               "-nodes",
               "-keyout", self.key, "-out", self.cert, "-days", "7", "-subj", "/CN=localhost",
               "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
        run(cmd)
        self.cert_cmd = " ".join(cmd).replace(self.tmp, "$TMP")
        for p in (self.cert, self.key):
            self.chown(p)
        os.chmod(self.key, 0o600)
        run([f"{PGBIN}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
            user=self.user)
        self.pg_settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.pgport),
            "unix_socket_directories": f"'{self.tmp}'",
            "max_connections": str(self.max_connections()),
            "shared_buffers": "512MB",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "password_encryption": "'scram-sha-256'",
            "ssl": "on",
            "ssl_cert_file": f"'{self.cert}'",
            "ssl_key_file": f"'{self.key}'",
            "log_min_messages": "warning",
            "jit": "off",  # pgbench's queries are far too cheap for it; and a bundle leaves the LLVM JIT out
        }
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write("\n# sluice bench\n")
            for k, v in self.pg_settings.items():
                f.write(f"{k} = {v}\n")
        with open(os.path.join(data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "host all bench_trust 127.0.0.1/32 trust\n"
                    "host all all 127.0.0.1/32 scram-sha-256\n")
        self.pglog = os.path.join(self.tmp, "postgres.log")
        self.pg = self.spawn("postgres", [f"{PGBIN}/postgres", "-D", data], self.pglog)
        for _ in range(300):
            r = run(["psql", "-h", self.tmp, "-p", str(self.pgport), "-U", "postgres", "-d", "postgres", "-Atc",
                     "select 1"], check=False)
            if r.returncode == 0:
                break
            if self.pg.poll() is not None:
                raise Failure(f"postgres exited:\n{tail(self.pglog)}")
            time.sleep(0.1)
        else:
            raise Failure(f"postgres did not start:\n{tail(self.pglog)}")
        self.psql("postgres", f"create role bench login password '{PASSWORD}'; create role bench_trust login;")
        self.psql("postgres", "create database bench owner bench")
        log(f"pgbench -i -s {self.scale}")
        t0 = time.time()
        run(["pgbench", "-i", "-q", "-s", str(self.scale), "-h", self.tmp, "-p", str(self.pgport), "-U", "bench",
             "bench"])
        log(f"initialised in {time.time() - t0:.0f} s")
        self.psql("bench", "grant all on all tables in schema public to bench_trust;")
        self.verifier = self.psql("postgres", "select rolpassword from pg_authid where rolname = 'bench'").strip()
        # Warm the cache once, directly, before anything is measured: the whole data set into shared
        # buffers, then a short pgbench run.
        self.psql("bench", "create extension if not exists pg_prewarm")
        self.psql("bench", "select sum(pg_prewarm(c.oid::regclass)) from pg_class c join pg_namespace n "
                           "on n.oid = c.relnamespace where n.nspname = 'public' and c.relkind in ('r', 'i')")
        run(["pgbench", "-n", "-S", "-c", "4", "-j", "2", "-T", "2" if self.scale > 1 else "1", "-h", self.tmp, "-p",
             str(self.pgport), "-U", "bench", "bench"])

    def max_connections(self):
        """300, or more when the suites' PgBouncer processes (each with its own pool) need it."""
        need = 300
        if any(SCENARIOS[s].get("suite") for s in self.scenarios):
            need = max(need, self.pgbouncer_procs * POOL_SIZE + 50)
        return need

    def psql(self, db, sql):
        return run(["psql", "-v", "ON_ERROR_STOP=1", "-h", self.tmp, "-p", str(self.pgport), "-U", "postgres", "-d", db,
                    "-Atc", sql]).stdout

    # ------------------------------------------------------------------ proxies
    def write_userlist(self, auth):
        path = os.path.join(self.tmp, f"userlist-{auth}.txt")
        secret = self.verifier if auth == "scram-verifier" else PASSWORD
        with open(path, "w") as f:
            f.write(f'"bench" "{secret}"\n"bench_trust" ""\n')
        self.chown(path)
        return path

    def proxy_config(self, kind, scn, extra=(), pool_size=POOL_SIZE):
        """The configuration of a `kind` proxy for scenario scn; `extra`: the variant's own lines;
        pool_size: each process's."""
        s = SCENARIOS[scn]
        auth = s["auth"]
        port = self.pbport if kind == "pgbouncer" else self.slport
        auth_type = {"trust": "trust", "scram-plain": "scram-sha-256", "scram-verifier": "scram-sha-256",
                     "token": "token"}[auth]
        if auth == "trust":
            db = f"bench = host=127.0.0.1 port={self.pgport} dbname=bench user=bench_trust pool_size={pool_size}"
        else:
            db = (f"bench = host=127.0.0.1 port={self.pgport} dbname=bench user=bench password={PASSWORD} "
                  f"pool_size={pool_size}")
        lines = [f"[{kind if kind == 'pgbouncer' else 'sluice'}]",
                 "listen_addr = 127.0.0.1",
                 f"listen_port = {port}",
                 "unix_socket_dir =",
                 "pool_mode = transaction",
                 f"default_pool_size = {pool_size}",
                 f"max_client_conn = {MAX_CLIENT_CONN}",
                 f"auth_type = {auth_type}",
                 f"auth_file = {self.write_userlist(auth)}",
                 "log_connections = 0",
                 "log_disconnections = 0"]
        lines += list(extra)
        if kind == "pgbouncer":
            lines.append("ignore_startup_parameters = extra_float_digits")
        if s.get("tls"):
            lines += ["client_tls_sslmode = require", f"client_tls_key_file = {self.key}",
                      f"client_tls_cert_file = {self.cert}"]
        if auth == "token":
            keys = os.path.join(self.tmp, "token-keys.ini")
            with open(keys, "w") as f:
                f.write(f"[{TOKEN_KEY_ID}]\nsecret = {TOKEN_SECRET}\nusers = bench\n")
            self.chown(keys)
            os.chmod(keys, 0o600)
            lines += [f"auth_token_keys = {keys}", f"auth_token_region = {TOKEN_REGION}",
                      f"auth_token_endpoints = 127.0.0.1:{port},localhost:{port}"]
        lines += ["", "[databases]", db, ""]
        return "\n".join(lines)

    def client_env(self, scn, target):
        s = SCENARIOS[scn]
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("PG"):
                del env[k]
        env["PGSSLMODE"] = "require" if s.get("tls") else "disable"
        env["PGGSSENCMODE"] = "disable"
        env["PGCONNECT_TIMEOUT"] = "20"
        user = "bench_trust" if s["auth"] == "trust" else "bench"
        if s["auth"] in ("scram-plain", "scram-verifier"):
            env["PGPASSWORD"] = PASSWORD
        if s["auth"] == "token":
            env["PGPASSWORD"] = self.token
        return env, user

    def port_of(self, target):
        return {"direct": self.pgport, "pgbouncer": self.pbport, "sluice": self.slport}[kind_of(target)]

    def check_login(self, scn, target, tries=50):
        env, user = self.client_env(scn, target)
        err = ""
        for _ in range(tries):
            r = run(["psql", "-h", "127.0.0.1", "-p", str(self.port_of(target)), "-U", user, "-d", "bench", "-Atc",
                     "select 1"], check=False, env=env, timeout=30)
            if r.returncode == 0 and r.stdout.strip() == "1":
                return None
            err = one_line(r.stdout, 300)
            time.sleep(0.1)
        return err or "login failed"

    def start_proxy(self, target, scn):
        """Starts one proxy (a target or variant) for scenario scn; returns (Popen, None) or (None,
        reason). A variant of several processes returns the first, with all of them in .group."""
        kind = kind_of(target)
        variant = VARIANTS.get(target, {})
        nprocs = procs_of(variant, self.pgbouncer_procs)
        if kind == "sluice" and not self.sluice_bin:
            return None, self.sluice_reason
        if scn == "b-token":
            if not self.token_bin:
                return None, "not available: tools/sluice-token does not exist"
            env = dict(os.environ, AWS_ACCESS_KEY_ID=TOKEN_KEY_ID, AWS_SECRET_ACCESS_KEY=TOKEN_SECRET)
            env.pop("AWS_SESSION_TOKEN", None)
            r = run([self.token_bin, "--host", "127.0.0.1", "--port", str(self.slport), "--user", "bench",
                     "--region", TOKEN_REGION], check=False, env=env)
            if r.returncode != 0 or not r.stdout.strip():
                return None, f"not available: sluice-token failed: {one_line(r.stdout)}"
            self.token = r.stdout.strip().splitlines()[-1]
        conf = os.path.join(self.tmp, f"{target}-{scn}.ini")
        text = self.proxy_config(kind, scn, variant.get("settings", ()), pool_size=POOL_SIZE // nprocs)
        with open(conf, "w") as f:
            f.write(text)
        self.chown(conf)
        self.configs.setdefault(target, {})[scn] = text
        argv = ["pgbouncer", conf] if kind == "pgbouncer" else [self.sluice_exe(), "-c", conf]
        group = []
        for i in range(nprocs):
            base = os.path.join(self.tmp, f"{target}-{scn}" + (f"-p{i + 1}" if nprocs > 1 else ""))
            logpath, n = base + ".log", 1
            while os.path.exists(logpath):
                n += 1
                logpath = f"{base}-{n}.log"
            p = self.spawn(kind, argv, logpath)
            p.logpath = logpath
            group.append(p)
        p = group[0]
        p.group = group
        err = self.check_login(scn, kind)
        time.sleep(0.2 if nprocs > 1 else 0)
        dead = [q for q in group if q.poll() is not None]
        if err or dead:
            q = dead[0] if dead else p
            for q2 in group:
                self.procs.stop(q2, signal.SIGTERM, 3)
            why = (f"{target} {'exited' if dead else 'refused the login'}: {err or 'process ended'}; "
                   f"log: {one_line(tail(q.logpath, 4), 300)}")
            return None, why
        return p, None

    def sluice_exe(self):
        """The sluice binary, copied into the scratch directory so that the unprivileged user can
        run it wherever the clone lives."""
        exe = os.path.join(self.tmp, "sluice")
        if not os.path.exists(exe):
            shutil.copy2(self.sluice_bin, exe)
            os.chmod(exe, 0o755)
        return exe

    def stop_proxy(self, p):
        if p is not None:
            for q in members(p):
                self.procs.stop(q, signal.SIGTERM, 5)

    # ------------------------------------------------------------------ one pgbench run
    def pgbench(self, scn, target, rnd, proxy):
        s = SCENARIOS[scn]
        env, user = self.client_env(scn, target)
        logdir = os.path.join(self.tmp, "txlog", f"{scn}-{target}-{rnd}")
        os.makedirs(logdir, exist_ok=True)
        port = self.port_of(target)
        duration = self.plan[scn][0]
        args = [a.format(jobs=self.jobs) for a in s["args"]]
        argv = ["pgbench", "-n", *args, "-T", str(duration), "-h", "127.0.0.1", "-p", str(port), "-U", user,
                "-l", "--log-prefix", os.path.join(logdir, "tx"), "bench"]
        envs = f"PGSSLMODE={env['PGSSLMODE']}" + (" PGPASSWORD=..." if "PGPASSWORD" in env else "")
        self.commands[scn] = (envs + " pgbench -n " + " ".join(args) + f" -T {duration} -h 127.0.0.1 "
                              f"-p <port> -U {user} -l --log-prefix <dir>/tx bench")
        watch = [q.pid for q in members(proxy)] if proxy is not None else []
        if s.get("fresh"):
            self.sampler.start()
        table = proc_table()
        cpu_pg0 = tree_cpu_seconds(self.pg.pid, table)
        cpu_px0 = sum(tree_cpu_seconds(w, table) for w in watch)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        self.procs.add("pgbench", p)
        try:
            out, _ = p.communicate(timeout=duration + 90)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            out += "\npgbench: error: timed out (killed by the harness)"
        self.procs.stop(p)
        wall = time.monotonic() - t0
        nthreads = sum(threads(w) or 0 for w in watch) if watch else None
        time.sleep(0.2)  # let backends and proxy finish closing the last connections
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        table = proc_table()
        cpu_pg = tree_cpu_seconds(self.pg.pid, table) - cpu_pg0
        cpu_px = sum(tree_cpu_seconds(w, table) for w in watch) - cpu_px0 if watch else None
        cpu_cl = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        hwm = sum(tree_mem_kib(w, "VmHWM") for w in watch) if watch else None
        res = dict(scenario=scn, target=target, round=rnd, rc=p.returncode, wall=wall)
        if s.get("fresh"):
            res["max_backends"] = self.sampler.stop()
            res["threads"] = nthreads
        # Cores: CPU seconds over the run's wall-clock seconds (pgbench start to exit), the same
        # window for all three, so that a side running flat out shows as its number of cores.
        res["cores_pg"] = cpu_pg / wall
        res["cores_proxy"] = cpu_px / wall if cpu_px is not None else None
        res["cores_client"] = cpu_cl / wall

        def grab(pattern, conv=float):
            m = re.search(pattern, out)
            return conv(m.group(1)) if m else None

        res["txns"] = grab(r"number of transactions actually processed: (\d+)", int)
        res["failed"] = grab(r"number of failed transactions: (\d+)", int) or 0
        res["tps"] = grab(r"tps = ([\d.]+)")
        res["conn_ms"] = grab(r"average connection time = ([\d.]+) ms")
        aborted = [l for l in out.splitlines() if "aborted" in l and "error" in l and "Run was aborted" not in l]
        res["aborted"] = len(aborted)
        errs = [l for l in out.splitlines() if "error:" in l and "Run was aborted" not in l]
        if errs:
            e = errs[0]
            m = re.search(r"((?:ERROR|FATAL):.*)", e)
            res["error"] = one_line(m.group(1) if m else e.split("error:", 1)[1])
        lat = []
        for path in glob.glob(os.path.join(logdir, "tx.*")):
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[2].isdigit():
                        lat.append(int(parts[2]))
        shutil.rmtree(logdir, ignore_errors=True)
        if lat:
            lat.sort()
            res["lat_mean_ms"] = sum(lat) / len(lat) / 1000
            res["lat_p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000
            res["logged"] = len(lat)
        ok = p.returncode == 0 and res["aborted"] == 0 and res["tps"] is not None and res["txns"]
        res["ok"] = bool(ok)
        if res["txns"]:
            k = res["txns"] / 1000
            res["cpu_pg"] = cpu_pg / k
            res["cpu_proxy"] = cpu_px / k if cpu_px is not None else None
            res["cpu_client"] = cpu_cl / k
        res["hwm_kib"] = hwm
        if not ok and "error" not in res and p.returncode == 0 and res["txns"] == 0:
            res["error"] = f"no transaction completed in -T {duration} (pgbench was still connecting its clients)"
        if not ok and "error" not in res:
            res["error"] = one_line(out[-300:]) or f"pgbench exited {p.returncode}"
        return res

    # ------------------------------------------------------------------ scenarios
    def run_scenario(self, scn):
        s = SCENARIOS[scn]
        targets = [t for t in s.get("targets", TARGETS) if t in self.targets]
        log(f"scenario {scn}: {s['desc']} ({', '.join(targets)})")
        if scn == "f":
            return self.run_idle(targets)
        if s.get("fresh"):
            return self.run_fresh(scn, targets)
        proxies = {}
        for t in targets:
            if t == "direct":
                continue
            p, why = self.start_proxy(t, scn)
            if p is None:
                self.unavailable[(scn, t)] = why
                if why != self.sluice_reason:
                    log(f"  {t}: {why}")
            else:
                proxies[t] = p
        active = [t for t in targets if t == "direct" or t in proxies]
        for rnd in range(1, self.plan[scn][1] + 1):
            for t in active:
                if (scn, t) in self.unavailable:
                    continue
                proxy = proxies.get(t)
                if proxy is not None and proxy.poll() is not None:
                    self.notes.append(f"{scn}: {t} had exited before round {rnd} (exit status {proxy.returncode}); "
                                      f"restarted")
                    self.procs.stop(proxy)
                    proxy, why = self.start_proxy(t, scn)
                    if proxy is None:
                        self.unavailable[(scn, t)] = why
                        continue
                    proxies[t] = proxy
                r = self.pgbench(scn, t, rnd, proxy)
                self.results.append(r)
                self.log_run(r)
                time.sleep(0.3)
        for t, p in proxies.items():
            if p.poll() is not None:
                self.notes.append(f"{scn}: {t} exited during the scenario (exit status {p.returncode}): "
                                  f"{one_line(tail(p.logpath, 3), 300)}")
            self.stop_proxy(p)

    def log_run(self, r):
        t, rnd = r["target"], r["round"]
        if r["ok"]:
            extra = f", conn {r['conn_ms']:.2f} ms" if r.get("conn_ms") is not None else ""
            cpu = f", proxy {r['cpu_proxy'] * 1000:.1f} us/txn" if r.get("cpu_proxy") is not None else ""
            if "max_backends" in r:
                px = "-" if r.get("cores_proxy") is None else f"{r['cores_proxy']:.2f}"
                cpu += (f", cores: proxy {px} pgbench {r['cores_client']:.2f} postgres {r['cores_pg']:.2f}, "
                        f"max backends {r['max_backends']}")
            log(f"  round {rnd} {t:9s} {r['tps']:10.1f} tps{extra}{cpu}")
        else:
            log(f"  round {rnd} {t:9s} FAILED: {r.get('error')}")

    def run_fresh(self, scn, targets):
        """The suites: each target started afresh for each run and stopped after it, one at a time,
        so that the backends counted are its own and a proxy's pools start empty; targets
        interleaved in each round as in the main benchmark."""
        for rnd in range(1, self.plan[scn][1] + 1):
            for t in targets:
                if (scn, t) in self.unavailable:
                    continue
                if not self.sampler.wait_empty():
                    self.notes.append(f"{scn}: backends of the previous run were still connected before {t}'s "
                                      f"round {rnd}")
                proxy = None
                if t != "direct":
                    proxy, why = self.start_proxy(t, scn)
                    if proxy is None:
                        self.unavailable[(scn, t)] = why
                        if why != self.sluice_reason:
                            log(f"  {t}: {why}")
                        continue
                try:
                    r = self.pgbench(scn, t, rnd, proxy)
                finally:
                    if proxy is not None:
                        gone = [q for q in members(proxy) if q.poll() is not None]
                        if gone:
                            self.notes.append(f"{scn}: {t} exited during round {rnd} (exit status "
                                              f"{gone[0].returncode}): {one_line(tail(gone[0].logpath, 3), 300)}")
                        self.stop_proxy(proxy)
                self.results.append(r)
                self.log_run(r)

    def run_idle(self, targets):
        n = self.idle_n
        self.commands["f"] = f"idle_clients 127.0.0.1 <port> bench_trust bench {n}"
        for rnd in range(1, self.idle_rounds + 1):
            for t in targets:
                if ("f", t) in self.unavailable:
                    continue
                p, why = self.start_proxy(t, "f")
                if p is None:
                    self.unavailable[("f", t)] = why
                    if why != self.sluice_reason:
                        log(f"  {t}: {why}")
                    continue
                try:
                    r = self.idle_round(t, p, n, rnd)
                finally:
                    self.stop_proxy(p)
                self.results.append(r)
                if r["ok"]:
                    log(f"  round {rnd} {t:9s} {n} idle clients: +{r['rss_delta_kib'] / 1024:.1f} MiB RSS, "
                        f"{r['kib_per_client']:.2f} KiB/client, {r['logins_per_s']:.0f} logins/s")
                else:
                    log(f"  round {rnd} {t:9s} FAILED: {r.get('error')}")

    def idle_round(self, target, proxy, n, rnd):
        res = dict(scenario="f", target=target, round=rnd, n=n, ok=False)
        time.sleep(0.5)
        base = tree_mem_kib(proxy.pid, "VmRSS")
        cpu0 = tree_cpu_seconds(proxy.pid)
        t0 = time.monotonic()
        c = subprocess.Popen([self.idle_bin, "127.0.0.1", str(self.port_of(target)), "bench_trust", "bench", str(n),
                              "120"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
        self.procs.add("idle_clients", c)
        try:
            line = ""
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                rd, _, _ = select.select([c.stdout], [], [], 1.0)
                if rd:
                    line = c.stdout.readline()
                    if not line or line.startswith(("READY", "FAIL")):
                        break
                elif c.poll() is not None:
                    break
            if not line.startswith("READY"):
                res["error"] = one_line(line or "idle_clients ended without a word")
                return res
            login_s = time.monotonic() - t0
            time.sleep(1.0)
            rss = tree_mem_kib(proxy.pid, "VmRSS")
            hwm = tree_mem_kib(proxy.pid, "VmHWM")
            cpu = tree_cpu_seconds(proxy.pid) - cpu0
            c.stdin.close()
            done = c.stdout.readline().strip()
            c.wait(timeout=30)
            lost = int(done.split("lost=")[1]) if "lost=" in done else None
            res.update(ok=lost == 0, rss_base_kib=base, rss_kib=rss, hwm_kib=hwm, rss_delta_kib=rss - base,
                       kib_per_client=(rss - base) / n, logins_per_s=n / login_s,
                       cpu_per_login_ms=cpu / n * 1000, lost=lost)
            if lost:
                res["error"] = f"{lost} of {n} idle connections were closed by {target}"
            return res
        finally:
            self.procs.stop(c, signal.SIGTERM, 5)

    # ------------------------------------------------------------------ main
    def main(self):
        mode = MODES[self.o.mode]
        self.duration = self.o.duration or mode["duration"]
        self.rounds = self.o.rounds or mode["rounds"]
        self.scale = self.o.scale or mode["scale"]
        self.idle_n = self.o.idle_clients or mode["idle_n"]
        self.idle_rounds = self.o.idle_rounds or min(mode["idle_rounds"], self.rounds)
        # The suites (--scaling, --workers-cost) replace the main scenarios and have their own -T and rounds.
        self.suites = [x for x, on in (("scaling", self.o.scaling), ("workers-cost", self.o.workers_cost)) if on]
        known = [n for su in SUITES.values() for n in su] if self.suites else ORDER
        default = [x for su in self.suites for x in SUITES[su]] if self.suites else mode["scenarios"]
        self.scenarios = self.o.scenarios.split(",") if self.o.scenarios else default
        for s in self.scenarios:
            if s not in SCENARIOS:
                raise Failure(f"unknown scenario {s} (known: {', '.join(known)})")
            if s not in known:
                raise Failure(f"scenario {s} is not part of this run (with{'' if self.suites else 'out'} "
                              f"--scaling/--workers-cost: {', '.join(known)})")
        self.plan = {}
        for s in self.scenarios:
            su = SCENARIOS[s].get("suite")
            m = SUITE_MODES[su][self.o.mode] if su else dict(duration=self.duration, rounds=self.rounds)
            self.plan[s] = (self.o.duration or m["duration"], self.o.rounds or m["rounds"])
        cores = os.cpu_count() or 2
        # PgBouncer is one thread: P = cores/4 processes on the same port is the usual way to give it
        # more, each with the whole pool (so P times the backends).
        self.pgbouncer_procs = self.o.pgbouncer_procs or max(1, cores // 4)
        self.jobs = self.o.jobs or max(2, cores // 2)  # pgbench -j of the scaling loads
        all_targets = list(dict.fromkeys(t for s in self.scenarios for t in SCENARIOS[s].get("targets", TARGETS)))
        self.targets = self.o.targets.split(",") if self.o.targets else all_targets
        if self.o.no_sluice:
            self.targets = [t for t in self.targets if kind_of(t) != "sluice"]
        self.started = datetime.datetime.now(datetime.timezone.utc)
        t0 = time.monotonic()
        self.load_before = os.getloadavg()
        self.raise_nofile()
        if any(kind_of(t) == "sluice" for t in self.targets):
            self.build_sluice()
        else:
            self.sluice_reason = "not run (--targets)"
        self.idle_bin = os.path.join(WORK, "idle_clients")
        if "f" in self.scenarios:
            run(["cc", "-O2", "-Wall", "-o", self.idle_bin, os.path.join(BENCH, "idle_clients.c")])
        self.setup_postgres()
        if any(SCENARIOS[s].get("fresh") for s in self.scenarios):
            self.sampler = BackendSampler(self)
        for scn in self.scenarios:
            self.run_scenario(scn)
        self.elapsed = time.monotonic() - t0
        self.load_after = os.getloadavg()
        log(f"done in {self.elapsed:.0f} s")
        import report  # noqa: E402  (bench/report.py)
        if self.suites:
            report.write_suites(self)
        else:
            report.write(self)
        # Direct Postgres and PgBouncer are the reference: if one of their runs failed where it is
        # expected to work, the harness itself is broken. With --require-sluice (the smoke test) a
        # failed or missing sluice run fails the whole run too.
        judged = {"direct", "pgbouncer"} | ({"sluice"} if self.o.require_sluice else set())
        broken = [r for r in self.results if not r["ok"] and kind_of(r["target"]) in judged
                  and (r["scenario"], r["target"]) not in EXPECTED_FAILURES]
        broken += [(s, t) for (s, t) in self.unavailable if kind_of(t) in judged]
        if broken:
            raise Failure(f"{len(broken)} run(s) that must work failed; see the report")


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="mode", action="store_const", const="quick", help="main scenarios, under 3 min")
    g.add_argument("--smoke", dest="mode", action="store_const", const="smoke",
                   help="one tiny round, seconds; writes to bench/work/")
    g.add_argument("--full", dest="mode", action="store_const", const="full", help="everything (the default)")
    ap.set_defaults(mode="full")
    ap.add_argument("--scaling", action="store_true",
                    help="the scaling suite instead of the main scenarios: direct, PgBouncer x1 and xP, sluice "
                         "workers=1 and auto (full: about 6 min on 16 cores; with --quick: about 2 min); writes "
                         "SCALING.md (default bench/work/)")
    ap.add_argument("--workers-cost", action="store_true",
                    help="sluice workers=1 against workers=2: CPU per transaction and TPS (with --scaling: both)")
    ap.add_argument("--scenarios", help=f"comma-separated subset of: {','.join(ORDER)} "
                                        f"(suites: {','.join(x for v in SUITES.values() for x in v)})")
    ap.add_argument("--targets", help="comma-separated subset of: direct,pgbouncer,sluice "
                                      f"(suites: {','.join(VARIANTS)})")
    ap.add_argument("--rounds", type=int, help="rounds per scenario (median reported)")
    ap.add_argument("--duration", type=int, help="pgbench -T seconds per run")
    ap.add_argument("--scale", type=int, help="pgbench -i scale")
    ap.add_argument("--idle-clients", type=int, help="connections held open in scenario f")
    ap.add_argument("--idle-rounds", type=int, help="rounds of scenario f")
    ap.add_argument("--commit", help="build sluice from this committed revision instead of the work tree")
    ap.add_argument("--sluice-bin", help="use this sluice binary instead of building one")
    ap.add_argument("--no-sluice", action="store_true", help="direct Postgres and PgBouncer only")
    ap.add_argument("--require-sluice", action="store_true",
                    help="fail (exit 1) when a sluice run fails, not only when a reference run does")
    ap.add_argument("--out", help="directory for RESULTS.md and results.png (default: bench/, smoke: bench/work/)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, configs)")
    ap.add_argument("--run-as", default="postgres", help="unprivileged user for the servers when run as root")
    ap.add_argument("--base-port", type=int, default=24432, help="first port tried for Postgres (then +1, +2)")
    ap.add_argument("--tmpdir", help="where the scratch directory is made (default: /tmp)")
    ap.add_argument("--pgbouncer-procs", type=int, help="PgBouncer processes of the xP target (default: cores/4)")
    ap.add_argument("--jobs", type=int, help="pgbench -j of the scaling loads (default: cores/2, at least 2)")
    ap.add_argument("--sluice-label", help="what the report says sluice is (default: its git commit here)")
    return ap.parse_args(argv)


def main(argv):
    opts = parse_args(argv)
    sys.path.insert(0, BENCH)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    b = Bench(opts)
    b.argv = argv
    code = 0
    try:
        b.main()
    except (KeyboardInterrupt, Interrupted) as e:
        log(f"interrupted ({e or 'Ctrl-C'}): cleaning up")
        code = 130
    except Failure as e:
        log(f"failed: {e}")
        code = 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        b.procs.stop_all()
        if b.tmp and not opts.keep:
            shutil.rmtree(b.tmp, ignore_errors=True)
            try:
                os.unlink(os.path.join(WORK, "run.tmpdir"))
            except FileNotFoundError:
                pass
        elif b.tmp:
            log(f"kept {b.tmp}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
