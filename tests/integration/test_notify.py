"""systemd notifications: sluice tells the service manager when it is ready, reloading and
stopping, keeps a STATUS= line current and pings the watchdog. The test owns the datagram socket
NOTIFY_SOCKET points at, as systemd would."""

import os
import re
import signal
import socket
import subprocess
import threading
import time

import harness
from harness import check, check_equal, one_value, wait_for

suite = harness.Suite()
test = suite.test


class NotifySocket:
    """A unix datagram socket collecting sd_notify messages as (arrival time, {key: value})."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self):
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def close(self):
        self._closed = True
        self._thread.join(2)
        self.sock.close()

    def snapshot(self):
        with self._lock:
            return list(self.messages)

    def mark(self):
        """A position: wait_for(..., after=mark) looks only at messages that arrive later."""
        return len(self.snapshot())

    def wait_for(self, key, value=None, after=0, timeout=10, what=None):
        """The first message from position `after` on with key (=value, or value(text) true)."""
        def find():
            for index, (_, fields) in enumerate(self.snapshot()[after:], start=after):
                if key in fields and (value is None or (value(fields[key]) if callable(value)
                                                        else fields[key] == value)):
                    return index, fields
            return None
        label = what or f"{key}={value if isinstance(value, str) else '...'}"
        return wait_for(find, timeout * harness.TIMEOUT_SCALE, what=f"sd_notify message {label}")

    def count(self, key, value=None, after=0):
        return sum(1 for _, f in self.snapshot()[after:] if key in f and (value is None or f[key] == value))


def require_libsystemd():
    binary = harness.sluice_binary()
    try:
        linked = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, timeout=10).stdout
    except OSError:
        return
    if "libsystemd" not in linked:
        raise harness.Skip("sluice was built without libsystemd: it sends no notifications")


def notified_sluice(t, settings=None, env=None, **kwargs):
    """A sluice started with NOTIFY_SOCKET pointing at a socket the test reads."""
    require_libsystemd()
    s = t.sluice(settings=settings, start=False, **kwargs)
    notify = NotifySocket(s.dir)
    full_env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": None, "WATCHDOG_PID": None}
    full_env.update(env or {})
    s.start(wait=False, env=full_env)
    return s, notify


def status_of(fields):
    return fields.get("STATUS", "")


@test("READY=1 arrives once the listeners accept connections, with a STATUS= line", sluice_only=True)
def ready_after_listeners(t):
    s, notify = notified_sluice(t)
    _, ready = notify.wait_for("READY", "1", timeout=15)
    # No wait_ready() here: READY=1 alone must mean that connecting works.
    with socket.create_connection((s.host, s.port), timeout=2):
        pass
    check(os.path.exists(s.unix_socket_path()), "unix socket missing when READY=1 arrived")
    check_equal(status_of(ready), "clients: 0, servers: 0, waiting: 0", "STATUS= with READY=1")
    check_equal(notify.count("READY", "1"), 1, "READY=1 messages at start")


@test("STATUS= follows the number of clients and backends", sluice_only=True)
def status_follows_clients(t):
    s, notify = notified_sluice(t)
    notify.wait_for("READY", "1", timeout=15)
    s.wait_ready()
    start = notify.mark()
    conns = [s.connect() for _ in range(2)]
    for conn in conns:
        one_value(conn, "SELECT 1")
    notify.wait_for("STATUS", lambda text: re.fullmatch(r"clients: 2, servers: [12], waiting: 0", text),
                    after=start, what="STATUS=clients: 2, servers: 1 or 2, waiting: 0")
    start = notify.mark()
    for conn in conns:
        conn.close()
    notify.wait_for("STATUS", lambda text: re.fullmatch(r"clients: 0, servers: [12], waiting: 0", text),
                    after=start, what="STATUS=clients: 0, ...")


@test("STATUS= is not repeated while nothing changes", sluice_only=True)
def status_quiet_when_idle(t):
    s, notify = notified_sluice(t)
    notify.wait_for("READY", "1", timeout=15)
    s.wait_ready()
    time.sleep(1.5)  # the start-up probe connection comes and goes
    start = notify.mark()
    time.sleep(2.0)
    check_equal(notify.count("STATUS", after=start), 0, "STATUS= messages while idle for 2 s")


@test("SIGHUP: RELOADING=1, then READY=1 once the new configuration is in", sluice_only=True)
def reload_notifies(t):
    s, notify = notified_sluice(t)
    notify.wait_for("READY", "1", timeout=15)
    start = notify.mark()
    s.reload()
    reloading_at, reloading = notify.wait_for("RELOADING", "1", after=start)
    check(reloading.get("MONOTONIC_USEC", "").isdigit(), f"MONOTONIC_USEC in {reloading}")
    ready_at, ready = notify.wait_for("READY", "1", after=start)
    check(ready_at > reloading_at, "READY=1 came before RELOADING=1")
    check(status_of(ready).startswith("clients: "), f"STATUS= after the reload: {ready}")
    check(s.alive(), "sluice exited on SIGHUP")


@test("SIGHUP with a broken config: still RELOADING=1 then READY=1 (the old config runs on)",
      sluice_only=True)
def broken_reload_notifies(t):
    s, notify = notified_sluice(t)
    notify.wait_for("READY", "1", timeout=15)
    s.write_config("[sluice]\nthis is not a setting\n")
    start = notify.mark()
    s.reload()
    reloading_at, _ = notify.wait_for("RELOADING", "1", after=start)
    ready_at, _ = notify.wait_for("READY", "1", after=start)
    check(ready_at > reloading_at, "READY=1 came before RELOADING=1")
    s.wait_ready()
    check_equal(one_value(s.connect(), "SELECT 'still serving'"), "still serving", "query after the reload")


@test("SIGTERM: STOPPING=1, then a clean exit", sluice_only=True)
def stopping_on_sigterm(t):
    s, notify = notified_sluice(t)
    notify.wait_for("READY", "1", timeout=15)
    start = notify.mark()
    s.signal(signal.SIGTERM)
    _, stopping = notify.wait_for("STOPPING", "1", after=start)
    check(status_of(stopping).startswith("stopping: clients: "), f"STATUS= with STOPPING=1: {stopping}")
    check_equal(s.wait_exit(15), 0, "exit status after SIGTERM")
    check_equal(notify.count("READY", "1", after=start), 0, "READY=1 after STOPPING=1")


@test("WATCHDOG_USEC set: WATCHDOG=1 at half the interval", sluice_only=True)
def watchdog_pings(t):
    s, notify = notified_sluice(t, env={"WATCHDOG_USEC": "1000000"})
    notify.wait_for("READY", "1", timeout=15)
    start = notify.mark()
    time.sleep(2.6)
    pings = [at for at, fields in notify.snapshot()[start:] if fields.get("WATCHDOG") == "1"]
    check(4 <= len(pings) <= 7, f"{len(pings)} WATCHDOG=1 in 2.6 s with WATCHDOG_USEC=1000000, want ~5")
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    check(all(0.3 < gap < 0.8 for gap in gaps), f"gaps between pings: {gaps}")


@test("WATCHDOG_PID of another process: sluice sends no WATCHDOG=1", sluice_only=True)
def watchdog_for_another_pid(t):
    s, notify = notified_sluice(t, env={"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"})
    notify.wait_for("READY", "1", timeout=15)
    time.sleep(1.0)
    check_equal(notify.count("WATCHDOG"), 0, "WATCHDOG=1 messages meant for another process")


@test("without NOTIFY_SOCKET sluice starts and serves as usual", sluice_only=True)
def no_notify_socket(t):
    s = t.sluice(start=False)
    s.start(env={"NOTIFY_SOCKET": None, "WATCHDOG_USEC": None})
    check_equal(one_value(s.connect(), "SELECT 1"), 1, "query")


@test("workers = 4: WATCHDOG=1 at half the interval while every worker's loop turns, and STATUS= "
      "counts the clients of every worker", sluice_only=True)
def watchdog_pings_four_workers(t):
    s, notify = notified_sluice(t, settings={"workers": 4}, env={"WATCHDOG_USEC": "1000000"})
    notify.wait_for("READY", "1", timeout=15)
    s.wait_ready()
    start = notify.mark()
    conns = [s.connect() for _ in range(8)]  # TCP: spread over the workers
    for conn in conns:
        one_value(conn, "SELECT 1")
    time.sleep(2.6)
    pings = [at for at, fields in notify.snapshot()[start:] if fields.get("WATCHDOG") == "1"]
    check(4 <= len(pings) <= 7, f"{len(pings)} WATCHDOG=1 in 2.6 s with 4 workers, want ~5")
    check("not pinging" not in s.log_text(), "a worker was reported stuck")
    notify.wait_for("STATUS", lambda text: re.fullmatch(r"clients: 8, servers: \d+, waiting: 0", text),
                    after=start, what="STATUS=clients: 8 (all workers)")


if __name__ == "__main__":
    raise SystemExit(suite.run())
