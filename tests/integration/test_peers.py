"""Several sluice instances behind one TCP load balancer (peer_id and [peers], as in PgBouncer):
a cancel request that the balancer hands to the wrong instance is forwarded to the owner."""

import os
import shutil
import socket
import subprocess
import sys
import time

import harness
from harness import Background, check, check_equal, one_value, wait_for

suite = harness.Suite()
test = suite.test

TRIES = 20


# A small TCP balancer for machines without HAProxy: each new connection goes to the next backend
# in turn, and bytes are copied both ways until either side closes. It runs as its own process:
# psycopg2's cancel() holds the GIL while it waits for the connection to close.
FORWARDER_SOURCE = r"""
import select, socket, sys, threading
backends = [(host, int(port)) for host, port in (arg.rsplit(":", 1) for arg in sys.argv[1:])]
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)

def pipe(client, backend):
    try:
        upstream = socket.create_connection(backend, timeout=10)
    except OSError:
        client.close()
        return
    ends = {client: upstream, upstream: client}
    try:
        while True:
            readable, _, _ = select.select(list(ends), [], [], 120)
            if not readable:
                return
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                ends[sock].sendall(data)
    except OSError:
        pass
    finally:
        client.close()
        upstream.close()

turn = 0
while True:
    client, _ = listener.accept()
    threading.Thread(target=pipe, args=(client, backends[turn % len(backends)]), daemon=True).start()
    turn += 1
"""


class RoundRobinForwarder:
    def __init__(self, backends):
        self.proc = harness._track(subprocess.Popen(
            [sys.executable, "-c", FORWARDER_SOURCE] + [f"{host}:{port}" for host, port in backends],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL))
        self.port = int(self.proc.stdout.readline())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()


class HAProxy:
    """HAProxy in TCP mode, round robin over the instances (as a fleet would run it)."""

    def __init__(self, directory, backends):
        self.port = harness.free_port()
        path = os.path.join(directory, "haproxy.cfg")
        servers = "\n".join(f"    server s{i} {host}:{port}" for i, (host, port) in enumerate(backends, 1))
        with open(path, "w") as f:
            f.write("global\n    maxconn 1000\n"
                    "defaults\n    mode tcp\n    timeout connect 5s\n"
                    "    timeout client 120s\n    timeout server 120s\n"
                    f"frontend sluice\n    bind 127.0.0.1:{self.port}\n    default_backend instances\n"
                    f"backend instances\n    balance roundrobin\n{servers}\n")
        self.log = open(os.path.join(directory, "haproxy.log"), "ab")
        self.proc = harness._track(subprocess.Popen(["haproxy", "-db", "-f", path], stdout=self.log,
                                                    stderr=self.log, stdin=subprocess.DEVNULL))
        wait_for(self._listening, 10, what="HAProxy listening")

    def _listening(self):
        check(self.proc.poll() is None, f"haproxy exited with status {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


class Balancer(harness.Endpoint):
    """Where the clients connect: the balancer in front of the instances."""

    def __init__(self, directory, instances):
        super().__init__()
        backends = [(s.host, s.port) for s in instances]
        if shutil.which("haproxy"):
            self.impl, self.kind = HAProxy(directory, backends), "HAProxy"
        else:
            self.impl, self.kind = RoundRobinForwarder(backends), "a round-robin forwarder"
        self.port = self.impl.port

    def touch(self):
        """Opens and closes one connection, moving the balancer's rotation on by one."""
        with socket.create_connection((self.host, self.port), timeout=10) as sock:
            sock.sendall(harness.request_packet(harness.SSL_REQUEST_CODE))  # any instance answers
            check_equal(sock.recv(1), b"N", "an instance's answer to SSLRequest")

    def stop(self):
        self.close_clients()
        self.impl.stop()
        return 0


def peers_section(instances):
    return "[peers]\n" + "".join(f"{i} = host={s.host} port={s.port}\n"
                                 for i, s in enumerate(instances, 1))


def start_peers(t, count=2, settings=None):
    """count instances with peer_id 1..count sharing one [peers] section (each lists itself too)."""
    instances = [t.sluice(settings=dict({"peer_id": i, "verbose": 1}, **(settings or {})), start=False)
                 for i in range(1, count + 1)]
    section = peers_section(instances)
    for s in instances:
        s.write_config(s.config_text() + "\n" + section)
        s.start()
    return instances


def query_running(t, sql):
    return t.cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = %s",
                         (sql,))[0][0] > 0


def forwarded_count(instances):
    return sum(s.log_text().count("cancel request forwarded to peer") for s in instances)


def cancel_through_balancer(t, settings=None):
    instances = start_peers(t, settings=settings)
    balancer = Balancer(os.path.dirname(instances[0].dir), instances)
    t.endpoints.append(balancer)
    t.note(f"load balancer: {balancer.kind}")
    owners = set()
    for attempt in range(1, TRIES + 1):
        # A round-robin balancer gives each new connection to the next instance. A connection
        # opened before the client or between the client and its cancel varies which instance
        # owns the client and whether the cancel lands on it or on its peer.
        pattern = attempt % 3
        if pattern == 1:
            balancer.touch()
        conn = balancer.connect()
        owner = conn.get_backend_pid() >> 17
        check(owner in (1, 2), f"try {attempt}: the cancel key names peer {owner}, not 1 or 2")
        owners.add(owner)
        sql = f"SELECT pg_sleep(60) /* try {attempt} */"
        running = Background(one_value, conn, sql)
        wait_for(lambda: query_running(t, sql) or running.done(), 20, what=f"try {attempt}: query running")
        check(not running.done(), f"try {attempt}: pg_sleep(60) ended before the cancel")
        if pattern == 2:
            balancer.touch()
        conn.cancel()
        error = running.error(20)
        check(error is not None, f"try {attempt}: the query was not cancelled")
        check_equal(getattr(error, "pgcode", None), "57014", f"try {attempt}: SQLSTATE ({error})")
        check_equal(one_value(conn, "SELECT 'still here'"), "still here",
                    f"try {attempt}: the client's next query")
        conn.close()
    check_equal(owners, {1, 2}, "instances that owned clients")
    check(forwarded_count(instances) > 0, "no cancel went through a peer: the test proved nothing")
    t.note(f"cancels forwarded between instances: {forwarded_count(instances)} of {TRIES}")
    return instances


@test(f"behind a load balancer, a cancel reaches the instance that owns the client in {TRIES} of "
      f"{TRIES} tries", timeout=300, sluice_only=True)
def cancel_through_balancer_one_worker(t):
    cancel_through_balancer(t, {"workers": 1})


@test(f"behind a load balancer, 4 workers each: a cancel reaches the owner's worker in {TRIES} of "
      f"{TRIES} tries", timeout=300, sluice_only=True)
def cancel_through_balancer_workers(t):
    # Whichever worker of whichever instance gets the cancel, it is forwarded once to the owner,
    # whose receiving worker passes it on to the client's.
    instances = cancel_through_balancer(t, {"workers": 4})
    passed_on = sum(s.log_text().count("cancel request passed from worker") for s in instances)
    t.note(f"cancels passed between workers: {passed_on}")
    check(passed_on > 0, "no cancel was passed from one worker to another: the test proved nothing")


def cancel_and_wait_close(s, pid, key):
    wire = s.wire()
    wire.sock.sendall(harness.cancel_packet(pid, key))
    wire.sock.settimeout(10)
    check_equal(wire.sock.recv(1), b"", "the cancel connection is closed without a reply")


@test("a cancel naming a peer id [peers] does not list is dropped and logged", sluice_only=True)
def unknown_peer_is_dropped(t):
    (s,) = start_peers(t, count=1)
    cancel_and_wait_close(s, (9 << 17) | 1, 12345)
    wait_for(lambda: "cancel request for peer 9 dropped: no such peer in [peers]" in s.log_text(), 10,
             what="the dropped cancel logged")
    check(s.alive(), "sluice exited")


@test("a cancel for a peer that is down is logged, and the instance carries on", sluice_only=True)
def peer_down(t):
    s = t.sluice(settings={"peer_id": 1}, start=False)
    s.write_config(s.config_text() + f"\n[peers]\n2 = host=127.0.0.1 port={harness.free_port()}\n"
                   f"3 = host={s.unix_dir}/missing port=6432\n")
    s.start()
    cancel_and_wait_close(s, (2 << 17) | 1, 12345)
    cancel_and_wait_close(s, (3 << 17) | 1, 12345)
    wait_for(lambda: "cancel request forwarded to peer 2 failed" in s.log_text(), 10,
             what="the failed forward to peer 2 logged")
    wait_for(lambda: "peer 3" in s.log_text(), 10, what="the failed forward to peer 3 logged")
    conn = s.connect()
    check_equal(one_value(conn, "SELECT 'alive'"), "alive", "a query after the failed forwards")


@test("a cancel already forwarded once is not forwarded again, and is logged", sluice_only=True)
def forwarded_cancel_is_not_forwarded_again(t):
    first, second = start_peers(t)
    cancel_and_wait_close(first, 0x80000000 | (2 << 17) | 1, 12345)
    wait_for(lambda: "cancel request for peer 2 dropped: it was already forwarded once" in first.log_text(),
             10, what="the dropped cancel logged")
    check_equal(forwarded_count([first, second]), 0, "cancels forwarded")


@test("SHOW CONFIG shows peer_id, SET cannot change it, and console keys carry it too",
      sluice_only=True)
def peer_id_on_the_console(t):
    users = dict(harness.default_users(t.cluster), admin=harness.scram_secret("admin_pw"))
    s = t.sluice(settings={"peer_id": 7, "admin_users": "admin"}, users=users)
    admin = s.connect(dbname="sluice", user="admin", password="admin_pw")
    check_equal(admin.get_backend_pid() >> 17, 7, "peer id in the console's own cancel key")
    with admin.cursor() as cur:
        cur.execute("SHOW CONFIG")
        rows = {row[0]: row for row in cur.fetchall()}
    check("peer_id" in rows, "peer_id is not in SHOW CONFIG")
    check_equal(rows["peer_id"][1:3], ("7", "0"), "peer_id value and default in SHOW CONFIG")
    error = harness.expect_pg_error(lambda: admin.cursor().execute("SET peer_id = 8"), ["55P02"],
                                    "SET peer_id")
    check("peer_id" in str(error), f"the error names the setting: {error}")


def refused_at_start(t, settings, peers_text, message):
    s = t.sluice(settings=settings, start=False)
    s.write_config(s.config_text() + "\n" + peers_text.replace("PORT", str(s.port)))
    s.start(wait=False)
    status = s.wait_exit(20)
    check(status is not None and status != 0, f"sluice started (exit status {status})")
    check(message in s.log_text(), f"message {message!r} not in the log:\n{s.log_tail()}")


@test("a peer_id beyond PgBouncer's 16383 is refused at start, with the range", sluice_only=True)
def peer_id_out_of_range(t):
    refused_at_start(t, {"peer_id": 16384}, "",
                     "peer_id: invalid value '16384' (expected an integer 0-16383)")


@test("a [peers] line for another id at the instance's own address is refused at start",
      sluice_only=True)
def peer_entry_pointing_at_itself(t):
    refused_at_start(t, {"peer_id": 1}, "[peers]\n2 = host=127.0.0.1 port=PORT\n",
                     "[peers] 2: host=127.0.0.1 port=")


suite.run()
