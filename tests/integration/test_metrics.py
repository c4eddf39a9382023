"""The Prometheus endpoint: GET /metrics in the text format, read with a real Prometheus parser,
whose values follow what clients do (connect, wait, fail to log in); and the stats_period line."""

import os
import re
import time
import urllib.error
import urllib.request

import harness
from harness import Background, check, check_equal, expect_pg_error, one_value, wait_for

suite = harness.Suite()
test = suite.test

CONTENT_TYPE = "text/plain; version=0.0.4"


def prometheus_parser():
    """Debian's python3-prometheus-client (scripts/check installs it; a test never installs)."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        raise harness.Skip("python3-prometheus-client is not installed "
                           "(scripts/check installs it: apt-get install python3-prometheus-client)")
    return text_string_to_metric_families


class Scrape:
    """One parsed /metrics page: families by name, and samples by name and labels."""

    def __init__(self, text):
        self.text = text
        self.families = {f.name: f for f in prometheus_parser()(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def find(self, name, **labels):
        wanted = {k: str(v) for k, v in labels.items()}
        return [s for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in wanted.items())]

    def value(self, name, **labels):
        """The value of the one sample with this name and (at least) these labels."""
        found = self.find(name, **labels)
        if len(found) != 1:
            raise harness.TestFailure(f"{name}{labels}: {len(found)} samples, want exactly 1")
        return found[0].value

    def total(self, name, **labels):
        return sum(s.value for s in self.find(name, **labels))


def http_get(url, method="GET", timeout=5):
    """(status, headers, body) for any status, 4xx and 5xx included."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode(errors="replace")


def metrics_sluice(t, settings=None, **kwargs):
    port = harness.free_port()
    merged = {"metrics_listen_addr": "127.0.0.1", "metrics_port": port}
    merged.update(settings or {})
    s = t.sluice(settings=merged, **kwargs)
    s.metrics_url = f"http://127.0.0.1:{port}/metrics"
    return s


def scrape(s):
    status, headers, body = http_get(s.metrics_url)
    check_equal(status, 200, "status of GET /metrics")
    return Scrape(body)


def pool(**labels):
    return dict(database=harness.APP_DB, user="app", **labels)


# ---- the format ----------------------------------------------------------------------------------

@test("GET /metrics: Prometheus text format 0.0.4, every family with HELP and TYPE", sluice_only=True)
def exposition_format(t):
    prometheus_parser()
    s = metrics_sluice(t)
    one_value(s.connect(), "SELECT 1")  # so the pool exists and per-pool families have samples
    status, headers, body = http_get(s.metrics_url)
    check_equal(status, 200, "status")
    check(headers.get("Content-Type", "").startswith(CONTENT_TYPE),
          f"Content-Type {headers.get('Content-Type')!r}, want {CONTENT_TYPE}")
    page = Scrape(body)
    for name, family in page.families.items():
        check(name.startswith("sluice_"), f"family {name} lacks the sluice_ prefix")
        check(family.type in ("counter", "gauge", "histogram"), f"{name}: type {family.type}")
        check(family.documentation, f"{name}: no HELP text")
        check(family.samples, f"{name}: no samples")
    helped = set(re.findall(r"^# HELP (\S+) ", body, re.M))
    typed = set(re.findall(r"^# TYPE (\S+) ", body, re.M))
    check_equal(helped, typed, "families with HELP vs families with TYPE")
    for name in ("sluice_client_connections", "sluice_pool_server_connections",
                 "sluice_pool_borrow_latency_seconds", "sluice_pool_query_latency_seconds",
                 "sluice_token_login_failures", "sluice_client_logins", "sluice_pool_transactions",
                 "sluice_pool_queries", "sluice_pool_received_bytes", "sluice_pool_sent_bytes",
                 "sluice_pool_longest_wait_seconds", "sluice_pool_wait_timeouts",
                 "sluice_client_tls_handshakes", "sluice_pool_server_connection_setups"):
        check(name in page.families, f"family {name} missing")
    check_equal(page.value("sluice_info", version=page.find("sluice_info")[0].labels["version"]), 1,
                "sluice_info")


@test("HEAD /metrics answers 200 with the length and no body; the connection stays usable",
      sluice_only=True)
def head_request(t):
    import http.client
    s = metrics_sluice(t)
    conn = http.client.HTTPConnection("127.0.0.1", s.settings["metrics_port"], timeout=5)
    try:
        conn.request("HEAD", "/metrics")
        head = conn.getresponse()
        check_equal(head.status, 200, "status of HEAD /metrics")
        check_equal(head.read(), b"", "body of HEAD /metrics")
        length = int(head.getheader("Content-Length") or -1)
        check(length > 0, f"Content-Length of HEAD /metrics: {length}")
        # Bytes of a body sent after the HEAD reply would garble this second reply.
        conn.request("GET", "/metrics")
        get = conn.getresponse()
        check_equal(get.status, 200, "status of GET /metrics after HEAD on the same connection")
        Scrape(get.read().decode())
    finally:
        conn.close()


@test("paths other than /metrics get 404; other methods on /metrics get 405", sluice_only=True)
def other_paths_and_methods(t):
    s = metrics_sluice(t)
    base = s.metrics_url[:-len("/metrics")]
    for path in ("/", "/metrics/", "/metricsx", "/favicon.ico", "/admin"):
        status, _, _ = http_get(base + path)
        check_equal(status, 404, f"status of GET {path}")
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        status, headers, _ = http_get(s.metrics_url, method=method)
        check_equal(status, 405, f"status of {method} /metrics")
        check_equal(headers.get("Allow"), "GET, HEAD", f"Allow header of the 405 to {method}")
    check_equal(http_get(s.metrics_url + "?name[]=x")[0], 200, "status of GET /metrics?query")
    check(s.alive(), "sluice exited")


def listening_tcp_ports(pid):
    """The TCP ports the process listens on: its socket descriptors (/proc/PID/fd) matched by inode
    against the kernel's tables of listening sockets (/proc/PID/net/tcp and tcp6, state 0A)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed since listdir
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


@test("metrics_port = 0 (the default): no metrics listener exists; setting the port opens one",
      sluice_only=True)
def endpoint_off_by_default(t):
    # metrics_init runs before the client listeners open, so once sluice accepts clients every
    # listener it will have is open.
    plain = t.sluice()
    check_equal(listening_tcp_ports(plain.proc.pid), {plain.port},
                "TCP ports sluice listens on without metrics settings (only listen_port)")
    with_address = t.sluice(settings={"metrics_listen_addr": "127.0.0.1"})
    check_equal(listening_tcp_ports(with_address.proc.pid), {with_address.port},
                "TCP ports sluice listens on with metrics_listen_addr but no metrics_port")
    enabled = metrics_sluice(t)
    metrics_port = int(enabled.metrics_url.split(":")[2].split("/")[0])
    check_equal(listening_tcp_ports(enabled.proc.pid), {enabled.port, metrics_port},
                "TCP ports sluice listens on with metrics_port set")


# ---- values that follow clients ------------------------------------------------------------------

@test("client and backend gauges and counters move as clients connect, query and leave",
      sluice_only=True)
def values_follow_clients(t):
    s = metrics_sluice(t, settings={"default_pool_size": 3})
    before = scrape(s)
    conns = [s.connect() for _ in range(2)]
    for conn in conns:
        for _ in range(3):
            one_value(conn, "SELECT 1")
    after = scrape(s)

    check_equal(after.total("sluice_client_connections", state="idle", tls="false"), 2,
                "idle plain clients")
    check_equal(after.total("sluice_client_connections", tls="true"), 0, "TLS clients")
    check_equal(after.value("sluice_client_logins_total", result="succeeded")
                - before.value("sluice_client_logins_total", result="succeeded"), 2,
                "successful logins")
    check_equal(after.value("sluice_client_connections_accepted_total")
                - before.value("sluice_client_connections_accepted_total"), 2, "accepted clients")
    check_equal(after.value("sluice_client_connections_max"), 500, "max_client_conn")
    check_equal(after.value("sluice_pool_client_connections", **pool(state="idle")), 2,
                "pool's idle clients")
    check(after.value("sluice_pool_queries_total", **pool()) >= 6, "queries counted")
    check(after.value("sluice_pool_transactions_total", **pool()) >= 6, "transactions counted")
    check(after.value("sluice_pool_received_bytes_total", **pool()) > 0, "bytes from clients")
    check(after.value("sluice_pool_sent_bytes_total", **pool()) > 0, "bytes to clients")
    check_equal(after.value("sluice_pool_server_connections_max", **pool()), 3, "pool_size")
    servers = after.total("sluice_pool_server_connections", **pool())
    check(1 <= servers <= 3, f"backends of the pool: {servers}")
    check_equal(after.value("sluice_pool_server_connections", **pool(state="used")), 0,
                "backends borrowed between transactions")
    check(after.value("sluice_pool_server_connection_setups_total", **pool(result="succeeded")) >= 1,
          "backend connections set up")
    check(after.value("sluice_pool_query_latency_seconds_count", **pool()) >= 6,
          "queries in the latency histogram")

    for conn in conns:
        conn.close()
    wait_for(lambda: scrape(s).total("sluice_client_connections") == 0, 10,
             what="client gauges back to 0 after the clients left")
    check_equal(scrape(s).value("sluice_pool_client_connections", **pool(state="idle")), 0,
                "pool's idle clients after they left")


@test("a client queued behind a held backend shows in the wait gauges, then in the borrow "
      "histogram", sluice_only=True)
def waiting_client(t):
    s = metrics_sluice(t, settings={"pool_mode": "transaction"},
                       databases={harness.APP_DB: t.cluster.database_line(pool_size=1)})
    holder, waiter = s.connect(), s.connect()
    with holder.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT 1")
    before = scrape(s)
    check_equal(before.value("sluice_pool_server_connections", **pool(state="used")), 1,
                "the held backend")
    check_equal(before.value("sluice_pool_server_connections_in_transaction", **pool()), 1,
                "backends inside a transaction block")
    check_equal(before.value("sluice_pool_client_connections", **pool(state="active")), 1,
                "active clients")
    blocked = Background(one_value, waiter, "SELECT 'waited'")
    during = wait_for(lambda: (lambda p: p if p.value("sluice_pool_client_connections",
                                                       **pool(state="waiting")) == 1 else None)(scrape(s)),
                      10, what="one waiting client in the gauge")
    check_equal(during.value("sluice_client_connections", state="waiting", tls="false"), 1,
                "waiting clients, worker-wide")
    time.sleep(0.3)
    longest = scrape(s).value("sluice_pool_longest_wait_seconds", **pool())
    check(0.2 <= longest < 30, f"longest wait {longest}s while one client waits")
    check(not blocked.done(), "the waiting client ran while the only backend was held")

    with holder.cursor() as cur:
        cur.execute("COMMIT")
    check_equal(blocked.result(10), "waited", "the waiting client's query")
    after = scrape(s)
    check_equal(after.value("sluice_pool_client_connections", **pool(state="waiting")), 0,
                "waiting clients after the commit")
    check_equal(after.value("sluice_pool_longest_wait_seconds", **pool()), 0,
                "longest wait with nobody waiting")
    check_equal(after.value("sluice_pool_waits_total", **pool())
                - before.value("sluice_pool_waits_total", **pool()), 1, "waits counted")
    borrowed = (after.value("sluice_pool_borrow_latency_seconds_count", **pool())
                - before.value("sluice_pool_borrow_latency_seconds_count", **pool()))
    check(borrowed >= 1, f"borrow histogram count grew by {borrowed}")
    waited_sum = (after.value("sluice_pool_borrow_latency_seconds_sum", **pool())
                  - before.value("sluice_pool_borrow_latency_seconds_sum", **pool()))
    check(waited_sum >= 0.25, f"borrow latency sum grew by {waited_sum}s, the wait lasted over 0.3s")
    check_cumulative_buckets(after, "sluice_pool_borrow_latency_seconds")
    check_cumulative_buckets(after, "sluice_pool_query_latency_seconds")


def check_cumulative_buckets(page, name):
    buckets = page.find(name + "_bucket", **pool())
    bounds = [(float(b.labels["le"]), b.value) for b in buckets]
    check_equal([b for b, _ in bounds], sorted(b for b, _ in bounds), f"{name}: le order")
    check_equal(bounds[-1][0], float("inf"), f"{name}: last bucket")
    values = [v for _, v in bounds]
    check_equal(values, sorted(values), f"{name}: cumulative bucket counts")
    check_equal(values[-1], page.value(name + "_count", **pool()), f"{name}: +Inf bucket vs _count")


@test("query_wait_timeout: the client that gave up is counted as a wait timeout", sluice_only=True)
def wait_timeout_counted(t):
    s = metrics_sluice(t, settings={"pool_mode": "transaction", "query_wait_timeout": 1},
                       databases={harness.APP_DB: t.cluster.database_line(pool_size=1)})
    holder = s.connect()
    with holder.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT 1")
    expect_pg_error(lambda: one_value(s.connect(), "SELECT 1"), None, "query behind a held backend")
    check_equal(scrape(s).value("sluice_pool_wait_timeouts_total", **pool()), 1, "wait timeouts")


@test("failed logins: a wrong password counts as a failed login", sluice_only=True)
def failed_login(t):
    s = metrics_sluice(t)
    before = scrape(s)
    expect_pg_error(lambda: s.wire().login(password="wrong"), "28P01", "login with a wrong password")
    after = wait_for(lambda: (lambda p: p if p.value("sluice_client_logins_total", result="failed")
                              > before.value("sluice_client_logins_total", result="failed")
                              else None)(scrape(s)), 5, what="the failed login in the counter")
    check_equal(after.value("sluice_client_logins_total", result="failed")
                - before.value("sluice_client_logins_total", result="failed"), 1, "failed logins")
    check_equal(after.value("sluice_client_logins_total", result="succeeded"),
                before.value("sluice_client_logins_total", result="succeeded"), "successful logins")


@test("logins are counted by method and by transport", sluice_only=True)
def logins_by_method(t):
    s = metrics_sluice(t)
    method = s.settings.get("auth_type", "scram-sha-256")
    before = scrape(s)
    expect_pg_error(lambda: s.wire().login(password="wrong"), "28P01", "login with a wrong password")
    s.connect().close()
    after = wait_for(lambda: (lambda p: p if p.value("sluice_client_logins_by_method_total",
                                                     method=method, result="succeeded")
                              > before.value("sluice_client_logins_by_method_total",
                                             method=method, result="succeeded")
                              else None)(scrape(s)), 5, what="the login in the method counter")
    for result in ("succeeded", "failed"):
        check_equal(after.value("sluice_client_logins_by_method_total", method=method, result=result)
                    - before.value("sluice_client_logins_by_method_total", method=method,
                                   result=result), 1, f"{method} logins {result}")
        check_equal(after.value("sluice_client_tls_logins_total", result=result),
                    before.value("sluice_client_tls_logins_total", result=result),
                    f"TLS logins {result} (none were over TLS)")


@test("token logins: a refused token is counted under the check that refused it", sluice_only=True)
def token_failure_reason(t):
    s = metrics_sluice(t, settings=None, start=False)
    keys = os.path.join(s.dir, "token-keys.ini")
    with open(keys, "w") as f:
        f.write("[AKIDMETRICSTEST]\nsecret = metrics-test-secret\nusers = app\n")
    s.settings.update({"auth_type": "token", "auth_token_keys": keys,
                       "auth_token_region": "us-east-1",
                       "auth_token_endpoints": f"127.0.0.1:{s.port}",
                       "auth_token_allow_unix_socket": 1})
    s.write_config()
    s.start()
    before = scrape(s)
    reasons = {x.labels["reason"] for x in before.find("sluice_token_login_failures_total")}
    for reason in ("malformed", "expired", "bad_signature", "unknown_access_key", "not_yet_valid"):
        check(reason in reasons, f"reason {reason!r} missing from {sorted(reasons)}")
    check(all(x.value == 0 for x in before.find("sluice_token_login_failures_total")),
          "token failures before any token login")
    expect_pg_error(lambda: s.wire(unix=True).login(password="not-a-token"), "28P01",
                    "login with a password that is no token")
    after = scrape(s)
    check_equal(after.value("sluice_token_login_failures_total", reason="malformed"), 1,
                "tokens refused as malformed")
    check_equal(after.total("sluice_token_login_failures_total"), 1, "tokens refused, all reasons")
    check_equal(after.value("sluice_client_logins_total", result="failed")
                - before.value("sluice_client_logins_total", result="failed"), 1, "failed logins")
    check_equal(after.value("sluice_token_logins_total"), 0, "token logins")


# ---- configuration -------------------------------------------------------------------------------

@test("SIGHUP: a new metrics_port moves the endpoint", sluice_only=True)
def reload_moves_endpoint(t):
    s = metrics_sluice(t)
    old_url = s.metrics_url
    scrape(s)
    new_port = harness.free_port()
    s.settings["metrics_port"] = new_port
    s.write_config()
    s.reload()
    s.metrics_url = f"http://127.0.0.1:{new_port}/metrics"
    wait_for(lambda: http_get(s.metrics_url, timeout=1)[0] == 200, 10, what="the endpoint on the new port")

    def old_port_closed():
        try:
            http_get(old_url, timeout=1)
            return False
        except OSError:
            return True

    wait_for(old_port_closed, 5, what="the old port to close")
    check(s.alive(), "sluice exited")


@test("a metrics_port already in use stops sluice at start with a clear error", sluice_only=True)
def port_in_use(t):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = t.sluice(settings={"metrics_listen_addr": "127.0.0.1", "metrics_port": port}, start=False)
        s.start(wait=False)
        status = s.wait_exit(15)
        check(status is not None and status != 0, f"sluice exit status {status}, want a failure")
        check("metrics: could not listen on 127.0.0.1:" + str(port) in s.log_text(),
              "the log does not name the metrics address it could not listen on")


@test("so_reuseport: a second sluice starts on the same listen and metrics ports", sluice_only=True)
def reuseport_shares_metrics_port(t):
    first = metrics_sluice(t, settings={"so_reuseport": 1})
    second = t.sluice(settings={"so_reuseport": 1, "listen_port": first.port,
                                "metrics_listen_addr": "127.0.0.1",
                                "metrics_port": first.settings["metrics_port"]}, start=False)
    second.port = first.port
    second.start()
    check(first.alive() and second.alive(), "both sluices run")
    check_equal(first.stop(), 0, "exit status of the first sluice")
    page = wait_for(lambda: scrape(first), 5, what="the second sluice answering /metrics")
    check("sluice_info" in page.families, "the page of the second sluice")
    check_equal(one_value(second.connect(), "SELECT 'second'"), "second", "query via the second sluice")


@test("malformed and oversized HTTP requests get an error, and sluice serves on", sluice_only=True)
def malformed_requests(t):
    import errno
    import socket
    s = metrics_sluice(t)
    port = s.settings["metrics_port"]
    requests = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),   # a TLS ClientHello
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"POST /metrics HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000,
        b"\r\n\r\n\r\n",
    ]
    for request in requests:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            try:
                sock.sendall(request)
                # sluice may already have answered and closed (oversized headers): that is fine.
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(4096):
                    pass
            except (ConnectionResetError, BrokenPipeError, socket.timeout):
                pass
            except OSError as e:
                if e.errno != errno.ENOTCONN:
                    raise
    check_equal(http_get(s.metrics_url)[0], 200, "GET /metrics after the malformed requests")
    check_equal(one_value(s.connect(), "SELECT 1"), 1, "a query after the malformed requests")


@test("stats_period: one 'stats:' line per pool with rates and averages", sluice_only=True)
def stats_line(t):
    s = t.sluice(settings={"stats_period": 1})
    conn = s.connect()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        one_value(conn, "SELECT 1")
    pattern = re.compile(r"stats: pool appdb/app: (\d+) xacts/s, (\d+) queries/s, in (\d+) B/s, "
                         r"out (\d+) B/s, xact (\d+) us, query (\d+) us, wait (\d+) us")
    lines = wait_for(lambda: [m for m in pattern.finditer(s.log_text()) if int(m.group(1)) > 0], 5,
                     what="a stats line with transactions in it")
    busy = lines[0]
    check(int(busy.group(2)) > 0, f"queries/s in {busy.group(0)!r}")
    check(int(busy.group(3)) > 0 and int(busy.group(4)) > 0, f"bytes/s in {busy.group(0)!r}")
    check(int(busy.group(6)) > 0, f"average query time in {busy.group(0)!r}")
    conn.close()


# ---- several workers ----------------------------------------------------------------------------

@test("workers = 4: one sample per pool summing every worker's clients, backends and counters; "
      "sluice_worker_* per worker, adding up to the process's clients", sluice_only=True)
def four_workers_summed(t):
    s = metrics_sluice(t, settings={"workers": 4, "default_pool_size": 20})
    n = 12
    conns = []
    for i in range(n):  # TCP: spread over the workers' SO_REUSEPORT sockets, by hash or by CPU
        with harness.cpu_of_attempt(i):
            conns.append(s.connect())
    for conn in conns:
        for _ in range(2):
            one_value(conn, "SELECT 1")
    page = scrape(s)
    check_equal(len(page.find("sluice_pool_client_connections", **pool(state="idle"))), 1,
                "samples of the pool's idle clients (one pool, whatever the workers)")
    check_equal(page.value("sluice_pool_client_connections", **pool(state="idle")), n,
                "idle clients of the pool, all workers")
    check_equal(page.total("sluice_client_connections", state="idle"), n, "idle clients of the process")
    check(page.value("sluice_pool_queries_total", **pool()) >= 2 * n, "queries of every worker counted")
    check(page.value("sluice_pool_query_latency_seconds_count", **pool()) >= 2 * n,
          "queries of every worker in the latency histogram")
    check_equal(page.value("sluice_client_logins_total", result="succeeded"), n, "logins, all workers")

    def backends_agree():
        """Backends still logging in settle: then sluice and PostgreSQL count the same."""
        backends = t.cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' "
                                 "AND datname = %s", (harness.APP_DB,))[0][0]
        now = scrape(s)
        per_worker = sum(now.value("sluice_worker_servers", worker=i) for i in range(4))
        return now.total("sluice_pool_server_connections", **pool()) == backends == per_worker
    wait_for(backends_agree, 10, what="the pool's backends and sluice_worker_servers summed equal "
                                      "PostgreSQL's backends")

    for name in ("sluice_worker_clients", "sluice_worker_servers", "sluice_worker_loop_iterations_total",
                 "sluice_worker_cpu_seconds_total", "sluice_worker_handoffs_in_total",
                 "sluice_worker_handoffs_out_total"):
        check_equal(sorted(x.labels["worker"] for x in page.find(name)), ["0", "1", "2", "3"],
                    f"{name}: one sample per worker")
    per_worker = [page.value("sluice_worker_clients", worker=i) for i in range(4)]
    check_equal(sum(per_worker), n, f"sluice_worker_clients summed ({per_worker})")
    check(sum(1 for v in per_worker if v > 0) > 1, f"clients on several workers: {per_worker}")
    check(all(page.value("sluice_worker_loop_iterations_total", worker=i) > 0 for i in range(4)),
          "every worker's loop turns")
    check(page.value("sluice_worker_cpu_seconds_total", worker=0) > 0, "worker 0's CPU time")
    for conn in conns:
        conn.close()
    wait_for(lambda: scrape(s).total("sluice_worker_clients") == 0, 10,
             what="sluice_worker_clients back to 0 after the clients left")


if __name__ == "__main__":
    raise SystemExit(suite.run())
