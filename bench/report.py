"""
Turns the runs collected by bench/harness.py into RESULTS.md, results.png and a JSON dump.
"""
import json
import math
import os
import platform
import shlex
import subprocess

import harness as H


def sig(x, digits=3):
    """A number with `digits` significant digits, never in e-notation."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 10 ** digits:
        return f"{x:,.0f}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(ax))))
    return f"{x:.{decimals}f}"


def mib(kib):
    return "-" if not kib else f"{kib / 1024:.1f}"


def short_na(status):
    return "not run" if status.startswith("not run") else "not available (see notes below)"


def spread(x):
    return "" if x is None else f" ±{x * 100:.0f}%"


def num(x, fmt):
    return "-" if x is None else format(x, fmt)


def cell(text):
    return str(text).replace("|", "\\|")


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def rfmt(x):
    return "-" if x is None else f"{x:.2f}×"


def cmd_out(argv):
    try:
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout.strip()
    except OSError:
        return "not installed"


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    return model, os.cpu_count(), platform.release(), mem


# ---------------------------------------------------------------------------------------------


def aggregate(b):
    rows = {}
    for scn in b.scenarios:
        targets = [t for t in H.SCENARIOS[scn].get("targets", H.TARGETS) if t in b.targets]
        for t in targets:
            runs = [r for r in b.results if r["scenario"] == scn and r["target"] == t]
            row = dict(rounds=len(runs))
            if not runs:
                row["status"] = b.unavailable.get((scn, t), "not run")
                row["na"] = True
                rows[(scn, t)] = row
                continue
            ok = [r for r in runs if r["ok"]]
            bad = [r for r in runs if not r["ok"]]
            if not ok:
                why = H.EXPECTED_FAILURES.get((scn, t))
                row["status"] = f"fails{f' (expected: {why})' if why else ''}: {bad[0].get('error', '?')}"
                row["fails"] = True
            elif bad:
                row["status"] = f"{len(bad)} of {len(runs)} rounds failed: {bad[0].get('error', '?')}"
            else:
                row["status"] = "ok"
            keys = ["tps", "lat_mean_ms", "lat_p99_ms", "conn_ms", "cpu_proxy", "cpu_pg", "cpu_client",
                    "kib_per_client", "rss_delta_kib", "rss_base_kib", "rss_kib", "logins_per_s", "cpu_per_login_ms",
                    "cores_proxy", "cores_pg", "cores_client"]
            for k in keys:
                row[k] = H.median([r.get(k) for r in ok])
            seen = [r["max_backends"] for r in runs if r.get("max_backends") is not None]
            row["max_backends"] = max(seen) if seen else None
            row["threads"] = max((r["threads"] for r in runs if r.get("threads") is not None), default=None)
            for k in ("tps", "cpu_proxy"):
                xs = [r[k] for r in ok if r.get(k) is not None]
                row[k + "_spread"] = (max(xs) - min(xs)) / 2 / row[k] if len(xs) > 1 and row[k] else None
            row["failed"] = sum(r.get("failed") or 0 for r in runs)
            row["aborted"] = sum(r.get("aborted") or 0 for r in runs)
            hwms = [r.get("hwm_kib") for r in runs if r.get("hwm_kib")]
            row["hwm_kib"] = max(hwms) if hwms else None
            rows[(scn, t)] = row
    return rows


def goals(b, rows):
    out = []

    def get(scn, t, k):
        r = rows.get((scn, t))
        return None if r is None or r.get("fails") or r.get("na") else r.get(k)

    for scn in b.scenarios:
        g = H.GOALS.get(scn)
        if not g:
            continue
        checks = []
        if "tps_p" in g:
            checks.append(("TPS vs PgBouncer", ratio(get(scn, "sluice", "tps"), get(scn, "pgbouncer", "tps")), ">=",
                           g["tps_p"]))
        if "tps_d" in g:
            checks.append(("TPS vs direct", ratio(get(scn, "sluice", "tps"), get(scn, "direct", "tps")), ">=",
                           g["tps_d"]))
        if "cpu_p" in g:
            checks.append(("proxy CPU/txn vs PgBouncer",
                           ratio(get(scn, "sluice", "cpu_proxy"), get(scn, "pgbouncer", "cpu_proxy")), "<=",
                           g["cpu_p"]))
        if "conn_p" in g:
            checks.append(("connection time vs PgBouncer",
                           ratio(get(scn, "sluice", "conn_ms"), get(scn, "pgbouncer", "conn_ms")), "<=", g["conn_p"]))
        if "p99_p" in g:
            checks.append(("p99 latency vs PgBouncer",
                           ratio(get(scn, "sluice", "lat_p99_ms"), get(scn, "pgbouncer", "lat_p99_ms")), "<=",
                           g["p99_p"]))
        if g.get("zero_fail"):
            r = rows.get((scn, "sluice"))
            v = None if r is None or r.get("na") else (r.get("failed", 0) + r.get("aborted", 0)
                                                        + (1 if r.get("fails") else 0))
            checks.append(("failures", v, "<=", 0))
        if "kib_per_client" in g:
            checks.append(("KiB RSS per idle client", get(scn, "sluice", "kib_per_client"), "<=", g["kib_per_client"]))
        for name, v, op, want in checks:
            if v is None:
                verdict = "n/a"
            else:
                verdict = "met" if (v >= want if op == ">=" else v <= want) else "not met"
            shown = "-" if v is None else (f"{v:.0f}" if name == "failures" else
                                          (f"{v:.2f}" if "KiB" in name else f"{v:.2f}×"))
            want_s = f"{want:g}" if name in ("failures",) or "KiB" in name else f"{want:g}×"
            out.append((scn, name, f"{op} {want_s}", shown, verdict))
    return out


def write(b):
    rows = aggregate(b)
    out_dir = b.o.out or (H.WORK if b.o.mode == "smoke" else H.BENCH)
    os.makedirs(out_dir, exist_ok=True)
    md_path = os.path.join(out_dir, "RESULTS.md")
    png_path = os.path.join(out_dir, "results.png")
    model, cores, kernel, mem = machine()
    commit = b.git_commit()
    pg_ver = cmd_out([f"{H.PGBIN}/postgres", "--version"])
    pb_ver = cmd_out(["pgbouncer", "--version"]).splitlines()[0]
    pgb_ver = cmd_out(["pgbench", "--version"])
    ssl_ver = cmd_out(["openssl", "version"])
    when = b.started.strftime("%Y-%m-%d %H:%M UTC")
    invocation = "bench/run" + ("" if b.o.mode == "full" else f" --{b.o.mode}")
    if b.argv:
        invocation = "bench/run " + " ".join(b.argv)

    L = []
    L.append("# sluice benchmark results\n")
    L.append(f"`{invocation}` on {when}: {b.rounds} round(s) per scenario, pgbench `-T {b.duration}`, "
             f"targets interleaved in each round (direct, PgBouncer, sluice), medians reported. "
             f"Took {b.elapsed / 60:.1f} min.\n")
    L.append(f"- Machine: {model}, {cores} cores, {mem}, Linux {kernel}")
    L.append(f"- {pg_ver}; {pgb_ver}; {pb_ver}; {ssl_ver}")
    L.append(f"- sluice: git commit {commit}" + (f" ({b.sluice_reason})" if b.sluice_reason else ""))
    L.append(f"- Load average (1, 5, 15 min) before the run: {', '.join(f'{x:.2f}' for x in b.load_before)}; after: "
             f"{', '.join(f'{x:.2f}' for x in b.load_after)} (anything else running on the machine skews all targets)")
    L.append(f"- pgbench scale {b.scale}; pool of {H.POOL_SIZE} server connections per proxy, transaction mode; "
             f"pgbench, the proxy and Postgres share the same {cores} cores")
    L.append("")
    L.append("How to read this: see bench/README.md. CPU figures are seconds of CPU per 1,000 transactions "
             "(1 s/1k = 1 ms per transaction); the proxy's own CPU is what a proxy controls when client, proxy and "
             "server share the cores, so it is the column to compare first.\n")

    pgb = [s for s in b.scenarios if s != "f"]
    # --- main table
    L.append("## Results (medians)\n")
    if not pgb:
        L.append("No pgbench scenario in this run.\n")
    chart = []
    if pgb:
        L.append("| scenario | target | TPS | mean latency ms | p99 latency ms | avg connection ms | failed txns "
                 "| proxy CPU s/1k txn | Postgres CPU s/1k txn | pgbench CPU s/1k txn | proxy peak RSS MiB |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for scn in b.scenarios:
            if scn == "f":
                continue
            for t in [t for t in H.SCENARIOS[scn].get("targets", H.TARGETS) if t in b.targets]:
                r = rows[(scn, t)]
                label = scn
                if r.get("na"):
                    L.append(f"| {label} | {H.TARGET_LABEL[t]} | {short_na(r['status'])} | | | | | | | | |")
                    continue
                if r.get("fails"):
                    L.append(f"| {label} | {H.TARGET_LABEL[t]} | {cell(r['status'])} | | | | "
                             f"{r['failed']} (+{r['aborted']} clients aborted) | | | | |")
                    continue
                failed = f"{r['failed']}" + (f" (+{r['aborted']} clients aborted)" if r["aborted"] else "")
                tps = f"{r['tps']:,.0f}{spread(r['tps_spread'])}" + ("" if r["status"] == "ok" else
                                                                    f" ({cell(r['status'])})")
                L.append(f"| {label} | {H.TARGET_LABEL[t]} | {tps} | {sig(r['lat_mean_ms'])} | "
                         f"{sig(r['lat_p99_ms'])} | {sig(r['conn_ms'])} | {failed} | "
                         f"{sig(r['cpu_proxy'])}{spread(r['cpu_proxy_spread'])} | "
                         f"{sig(r['cpu_pg'])} | {sig(r['cpu_client'])} | "
                         f"{mib(r['hwm_kib'])} |")
        L.append("")
        L.append("±: half the range (max − min) of the rounds, relative to the median: how far apart the rounds were.\n")
        L.append("Peak RSS is VmHWM, the proxy's high-water mark: each proxy is started afresh for each scenario, so it "
                 "is the peak over that scenario's rounds (for direct Postgres, '-': many processes).\n")

        # --- ratios
        L.append("## sluice against PgBouncer and direct Postgres (ratios of medians)\n")
        L.append("| scenario | TPS sluice/PgBouncer | TPS sluice/direct | proxy CPU per txn sluice/PgBouncer "
                 "| mean latency sluice/PgBouncer | p99 sluice/PgBouncer | connection time sluice/PgBouncer "
                 "| peak RSS sluice/PgBouncer |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for scn in b.scenarios:
            if scn in ("f", "b-token"):
                continue

            def g(t, k):
                r = rows.get((scn, t))
                return None if r is None or r.get("na") or r.get("fails") else r.get(k)

            tp = ratio(g("sluice", "tps"), g("pgbouncer", "tps"))
            td = ratio(g("sluice", "tps"), g("direct", "tps"))
            cp = ratio(g("sluice", "cpu_proxy"), g("pgbouncer", "cpu_proxy"))
            lm = ratio(g("sluice", "lat_mean_ms"), g("pgbouncer", "lat_mean_ms"))
            lp = ratio(g("sluice", "lat_p99_ms"), g("pgbouncer", "lat_p99_ms"))
            cn = ratio(g("sluice", "conn_ms"), g("pgbouncer", "conn_ms"))
            rs = ratio(g("sluice", "hwm_kib"), g("pgbouncer", "hwm_kib"))
            L.append(f"| {scn} | {rfmt(tp)} | {rfmt(td)} | {rfmt(cp)} | {rfmt(lm)} | {rfmt(lp)} | {rfmt(cn)} | {rfmt(rs)} |")
            if tp is not None or cp is not None:
                chart.append((scn, tp, cp))
        L.append("")
        L.append("'-': a side did not run or failed (see the table above).\n")

    # --- idle clients
    if "f" in b.scenarios:
        L.append(f"## (f) idle clients\n")
        L.append(f"{b.idle_n:,} connections opened through the proxy by bench/idle_clients.c, each logged in "
                 f"(trust) and then left idle; RSS is the proxy's VmRSS after one warm-up login and again with all of "
                 f"them connected. {b.idle_rounds} round(s), each against a freshly started proxy; medians.\n")
        L.append("| target | RSS before MiB | RSS with clients MiB | KiB per idle client | logins/s "
                 "| proxy CPU per login µs |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for t in [t for t in H.SCENARIOS["f"]["targets"] if t in b.targets]:
            r = rows[("f", t)]
            if r.get("na") or r.get("fails"):
                L.append(f"| {H.TARGET_LABEL[t]} | {short_na(r['status']) if r.get('na') else cell(r['status'])} "
                         f"| | | | |")
                continue
            L.append(f"| {H.TARGET_LABEL[t]} | {r['rss_base_kib'] / 1024:.1f} | {r['rss_kib'] / 1024:.1f} | "
                     f"{sig(r['kib_per_client'])} | {r['logins_per_s']:,.0f} | {sig(r['cpu_per_login_ms'] * 1000)} |")
        a = rows.get(("f", "sluice"), {})
        p = rows.get(("f", "pgbouncer"), {})
        if not a.get("na") and not p.get("na") and a.get("kib_per_client") and p.get("kib_per_client"):
            L.append(f"\nsluice/PgBouncer RSS per idle client: {a['kib_per_client'] / p['kib_per_client']:.2f}×")
        L.append("")

    # --- goals
    gl = goals(b, rows)
    if gl:
        L.append("## Goals for sluice\n")
        L.append("| scenario | figure | goal | measured | |")
        L.append("|---|---|---|---:|---|")
        for scn, name, want, shown, verdict in gl:
            L.append(f"| {scn} | {name} | {want} | {shown} | {verdict} |")
        L.append("")

    # --- unavailable and notes
    na = {}
    for (s, t), why in b.unavailable.items():
        na.setdefault((t, why), []).append(s)
    if na or b.notes or any(row.get("fails") for row in rows.values()):
        L.append("## Not available, failures and notes\n")
        for (t, why), scns in na.items():
            L.append(f"- {H.TARGET_LABEL[t]}, {', '.join(scns)}: {cell(why)}")
        for r in rows:
            row = rows[r]
            if row.get("fails"):
                L.append(f"- {r[0]} / {H.TARGET_LABEL[r[1]]}: {row['status']}")
        for n in b.notes:
            L.append(f"- {n}")
        L.append("")

    # --- commands
    L.append("## Exactly what ran\n")
    L.append("Scenarios and pgbench commands (`<port>`: Postgres, PgBouncer or sluice; every run also has "
             "`PGGSSENCMODE=disable`):\n")
    L.append("| scenario | what | command |")
    L.append("|---|---|---|")
    for scn in b.scenarios:
        c = b.commands.get(scn, "")
        L.append(f"| {scn} | {H.SCENARIOS[scn]['desc']} | `{cell(c)}` |")
    L.append("")
    L.append("Setup:\n")
    L.append("```")
    if b.sluice_bin and b.o.sluice_bin:
        L.append(f"# sluice: the given binary {b.sluice_bin}")
    elif b.sluice_bin or b.build_cmds:
        src = f"git archive {b.o.commit}" if b.o.commit else "a copy of the work tree"
        L.append(f"# sluice, built from {src} in bench/work/sluice-build (incrementally):")
        L.append("./autogen.sh && ./configure CFLAGS='-O2 -g' --disable-werror --disable-sanitizers")
        L.append("make src/sluice tools/sluice-token")
    L.append(b.cert_cmd)
    L.append(f"initdb -D $TMP/pgdata -U postgres -A trust -E UTF8 --locale=C")
    L.append("# postgresql.conf: " + ", ".join(f"{k}={v}" for k, v in b.pg_settings.items()
                                              if k not in ("port", "unix_socket_directories"))
             .replace(b.tmp, "$TMP"))
    L.append("# pg_hba.conf: local trust; host bench_trust 127.0.0.1/32 trust; host all 127.0.0.1/32 scram-sha-256")
    L.append("create role bench login password '...'; create role bench_trust login; "
             "create database bench owner bench;")
    L.append(f"pgbench -i -q -s {b.scale} -U bench bench")
    L.append("grant all on all tables in schema public to bench_trust;")
    L.append("```\n")
    L.append("Users: `bench_trust` for trust and TLS scenarios (Postgres trusts it), `bench` (SCRAM password) for "
             "the SCRAM and token scenarios. The auth file holds both; for b-scram-verifier it holds the SCRAM "
             "verifier that Postgres stored for `bench`.\n")
    for kind in ("pgbouncer", "sluice"):
        confs = b.configs.get(kind, {})
        if not confs:
            continue
        first = next(iter(confs))
        L.append(f"{H.TARGET_LABEL[kind]} configuration for {first} (other scenarios change only auth_type, "
                 f"auth_file, the [databases] user and the TLS/token lines):\n")
        L.append("```ini")
        L.append(confs[first].replace(b.tmp, "$TMP").replace(H.PASSWORD, "...").strip())
        L.append("```\n")

    # --- all rounds
    L.append("## Every round\n")
    L.append("| scenario | target | round | TPS | mean ms | p99 ms | conn ms | proxy CPU s/1k | Postgres CPU s/1k "
             "| pgbench CPU s/1k | error |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in b.results:
        if r["scenario"] == "f":
            L.append(f"| f | {H.TARGET_LABEL[r['target']]} | {r['round']} | "
                     f"{sig(r.get('kib_per_client'))} KiB/client | | | | | | | {cell(r.get('error', ''))} |")
            continue
        L.append(f"| {r['scenario']} | {H.TARGET_LABEL[r['target']]} | {r['round']} | "
                 f"{num(r.get('tps'), ',.0f')} | {sig(r.get('lat_mean_ms'))} | {sig(r.get('lat_p99_ms'))} | "
                 f"{sig(r.get('conn_ms'))} | {sig(r.get('cpu_proxy'))} | {sig(r.get('cpu_pg'))} | "
                 f"{sig(r.get('cpu_client'))} | {cell(r.get('error', ''))} |")
    L.append("")

    with open(md_path, "w") as f:
        f.write("\n".join(L))
    with open(os.path.join(H.WORK, f"results-{b.o.mode}.json"), "w") as f:
        json.dump(dict(results=b.results, unavailable={f"{s}/{t}": v for (s, t), v in b.unavailable.items()},
                       notes=b.notes), f, indent=1)

    # --- chart
    dat = os.path.join(H.WORK, "chart.dat")
    with open(dat, "w") as f:
        f.write("# scenario tps_ratio cpu_ratio\n")
        for scn, tp, cp in chart:
            f.write(f"{scn} {'NaN' if tp is None else f'{tp:.4f}'} {'NaN' if cp is None else f'{cp:.4f}'}\n")
    sub = f"{when}, {invocation}, sluice {commit.split()[0]}, {model}, {cores} cores"
    top = max([1.0] + [x for _, tp, cp in chart for x in (tp, cp) if x is not None])
    gp = (f"datafile='{dat}'; outfile='{png_path}'; subtitle='{sub}'; empty={0 if chart else 1}; "
          f"ymax={top * 1.15:.3f}")
    r = subprocess.run(["gnuplot", "-e", gp, os.path.join(H.BENCH, "chart.gp")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        H.log(f"gnuplot failed: {r.stdout.strip()}")
    H.log(f"wrote {md_path} and {png_path}")
    # The table, on the terminal too.
    start = L.index("## Results (medians)\n")
    end = next(i for i, l in enumerate(L) if l.startswith("## Exactly what ran"))
    print("\n".join(L[start:end]))


# ---------------------------------------------------------------------------------------------
# The suites: bench/run --scaling and --workers-cost


def pool_text(b, target, scn):
    if target == "direct":
        m = [a for a in H.SCENARIOS[scn]["args"] if a.isdigit()]
        return f"none ({m[0]} clients)" if m else "none"
    if target == "pgbouncer-xP":
        return f"{H.POOL_SIZE} × {procs(b)} = {H.POOL_SIZE * b.pgbouncer_procs}"
    if H.kind_of(target) == "sluice":
        n = H.procs_of(H.VARIANTS.get(target, {}), b.pgbouncer_procs)
        if n > 1:
            return f"{H.POOL_SIZE // n} × {n} processes = {H.POOL_SIZE // n * n}"
        return f"{H.POOL_SIZE} (one pool for all workers)"
    return str(H.POOL_SIZE)


def procs(b):
    return f"{b.pgbouncer_procs} process{'es' if b.pgbouncer_procs != 1 else ''}"


def label(b, target):
    return H.TARGET_LABEL[target].replace("xP", f"x{b.pgbouncer_procs}")


def suite_table(b, rows, scns):
    L = ["| load | target | proxy threads | TPS | conn/s | avg connection ms | failed txns | proxy cores "
         "| proxy CPU µs/txn | pgbench cores | Postgres cores | max backends seen | configured pool |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for scn in scns:
        connect = "-C" in H.SCENARIOS[scn]["args"]
        for t in [t for t in H.SCENARIOS[scn]["targets"] if t in b.targets]:
            r = rows[(scn, t)]
            if r.get("na") or r.get("fails"):
                why = short_na(r["status"]) if r.get("na") else cell(r["status"])
                L.append(f"| {scn} | {label(b, t)} | | {why} | | | | | | | | | {pool_text(b, t, scn)} |")
                continue
            failed = f"{r['failed']}" + (f" (+{r['aborted']} clients aborted)" if r["aborted"] else "")
            tps = f"{r['tps']:,.0f}{spread(r['tps_spread'])}" + ("" if r["status"] == "ok" else
                                                                f" ({cell(r['status'])})")
            us = None if r.get("cpu_proxy") is None else r["cpu_proxy"] * 1000
            L.append(f"| {scn} | {label(b, t)} | {num(r['threads'], 'd')} | {tps} | "
                     f"{num(r['tps'] if connect else None, ',.0f')} | "
                     f"{sig(r['conn_ms'])} | {failed} | {num(r['cores_proxy'], '.2f')} | {sig(us)} | "
                     f"{num(r['cores_client'], '.2f')} | {num(r['cores_pg'], '.2f')} | "
                     f"{num(r['max_backends'], 'd')} | {pool_text(b, t, scn)} |")
    L.append("")
    return L


def write_suites(b):
    rows = aggregate(b)
    out_dir = b.o.out or H.WORK
    os.makedirs(out_dir, exist_ok=True)
    md_path = os.path.join(out_dir, "SCALING.md")
    model, cores, kernel, mem = machine()
    label_s = b.o.sluice_label or f"git commit {b.git_commit() or 'unknown'}"
    sl_ver = cmd_out([b.sluice_bin, "-V"]) if b.sluice_bin else (b.sluice_reason or "not run")
    pg_ver = cmd_out([f"{H.PGBIN}/postgres", "--version"])
    pb_ver = cmd_out(["pgbouncer", "--version"]).splitlines()[0]
    pgb_ver = cmd_out(["pgbench", "--version"])
    ssl_ver = cmd_out(["openssl", "version"])
    when = b.started.strftime("%Y-%m-%d %H:%M UTC")
    invocation = "bench/run " + " ".join(map(shlex.quote, b.argv or []))
    plan_s = "; ".join(f"{su}: pgbench `-T {d}`, {r} round{'s' if r > 1 else ''}"
                       for su in b.suites for d, r in sorted({b.plan[s] for s in b.scenarios
                                                                if H.SCENARIOS[s]["suite"] == su}))

    L = []
    title = " and ".join({"scaling": "scaling across cores", "workers-cost": "the cost of a second worker"}[s]
                         for s in b.suites)
    L.append(f"## sluice `workers`: {title}\n")
    L.append(f"`{invocation.strip()}` on {when} ({plan_s}): targets interleaved in each round, each "
             f"started afresh for each run and alone on the machine while it runs; medians over rounds. Took "
             f"{b.elapsed / 60:.1f} min.\n")
    L.append(f"- Machine: {model}, {cores} cores, {mem}, Linux {kernel}")
    L.append(f"- {pg_ver}; {pgb_ver}; {pb_ver}; {ssl_ver}")
    L.append(f"- sluice: {label_s} ({sl_ver})")
    L.append(f"- Load average (1, 5, 15 min) before the run: {', '.join(f'{x:.2f}' for x in b.load_before)}; after: "
             f"{', '.join(f'{x:.2f}' for x in b.load_after)}")
    scaling = "scaling" in b.suites
    L.append(f"- pgbench scale {b.scale}" + (f", `-j {b.jobs}` for the scaling loads" if scaling else "")
             + f"; pool_size = {H.POOL_SIZE} per proxy process, transaction mode"
             + (f"; PgBouncer x{b.pgbouncer_procs}: {procs(b)} (P = cores/4) on one port with so_reuseport = 1, "
                f"each with that pool" if scaling else "")
             + f"; pgbench, proxy and Postgres share the {cores} cores")
    L.append("")
    L.append("Columns: *proxy threads*: the proxy's threads at the end of the run (all processes; the kernel's "
             "io_uring workers left out), so workers=auto shows what it resolved to. *cores* = CPU seconds (utime + stime from /proc, all processes of the proxy, the postmaster "
             "and every backend for Postgres, getrusage for pgbench) divided by the run's wall-clock seconds: a side "
             "that shows about as many cores as it has threads (pgbench: its `-j`) is the limit. *proxy CPU µs/txn* "
             "= the proxy's CPU seconds / transactions. *conn/s* (with `-C`): every transaction opens one "
             "connection, so it is the TPS. *max backends seen*: client backends of database bench in "
             "pg_stat_activity, sampled every 0.5 s during the run, to compare with the pool configured.\n")

    for su in b.suites:
        scns = [s for s in b.scenarios if H.SCENARIOS[s].get("suite") == su]
        if not scns:
            continue
        if su == "scaling":
            L.append("### Scaling: direct Postgres, PgBouncer x1 and xP, sluice workers=1 and auto\n")
            L += suite_table(b, rows, scns)
        else:
            L.append("### The cost of a second worker: sluice workers=1 against workers=2 (and two processes of "
                     "one worker)\n")
            L += suite_table(b, rows, scns)

            def g(scn, t, k):
                r = rows.get((scn, t))
                return None if r is None or r.get("na") or r.get("fails") else r.get(k)

            L.append("| load | figure | workers=2 / workers=1 | aim in the issue |")
            L.append("|---|---|---:|---|")
            for scn in scns:
                cp = ratio(g(scn, "sluice-w2", "cpu_proxy"), g(scn, "sluice-w1", "cpu_proxy"))
                L.append(f"| {scn} | proxy CPU per transaction | {rfmt(cp)} | "
                         f"{'at most 1.1×' if '-C' not in H.SCENARIOS[scn]['args'] else '-'} |")
                if "-C" in H.SCENARIOS[scn]["args"]:
                    tp = ratio(g(scn, "sluice-w2", "tps"), g(scn, "sluice-w1", "tps"))
                    L.append(f"| {scn} | TPS (connections/s) | {rfmt(tp)} | no slower (1× or more) |")
                cph = ratio(g(scn, "sluice-w2-hash", "cpu_proxy"), g(scn, "sluice-w1", "cpu_proxy"))
                if cph is not None:
                    L.append(f"| {scn} | proxy CPU per transaction, workers=2 with steer_by_cpu=off / "
                             f"workers=1 | {rfmt(cph)} | (for reading: connections by the hash) |")
                    if "-C" in H.SCENARIOS[scn]["args"]:
                        tph = ratio(g(scn, "sluice-w2-hash", "tps"), g(scn, "sluice-w1", "tps"))
                        L.append(f"| {scn} | TPS, workers=2 with steer_by_cpu=off / workers=1 | "
                                 f"{rfmt(tph)} | (for reading) |")
                # Two unshared loops against one: the part of the cost that is not the sharing.
                cp2 = ratio(g(scn, "sluice-2p", "cpu_proxy"), g(scn, "sluice-w1", "cpu_proxy"))
                if cp2 is not None:
                    L.append(f"| {scn} | proxy CPU per transaction, 2 processes of 1 worker / workers=1 | "
                             f"{rfmt(cp2)} | (for reading: two loops that share nothing) |")
            L.append("")
            L.append("Timings are never a pass/fail here: the ratios are for reading, with the spread (±) of the "
                     "rounds above.\n")

    na = {}
    for (s, t), why in b.unavailable.items():
        na.setdefault((t, why), []).append(s)
    if na or b.notes:
        L.append("### Not available, failures and notes\n")
        for (t, why), scns in na.items():
            L.append(f"- {label(b, t)}, {', '.join(scns)}: {cell(why)}")
        for n in b.notes:
            L.append(f"- {n}")
        L.append("")

    L.append("### Exactly what ran\n")
    L.append("| load | what | command |")
    L.append("|---|---|---|")
    for scn in b.scenarios:
        L.append(f"| {scn} | {H.SCENARIOS[scn]['desc']} | `{cell(b.commands.get(scn, ''))}` |")
    L.append("")
    L.append("Postgres: " + ", ".join(f"{k}={v}" for k, v in b.pg_settings.items()
                                      if k not in ("port", "unix_socket_directories", "ssl_cert_file", "ssl_key_file"))
             + "; the same self-signed ECDSA P-256 certificate for Postgres and both proxies.\n")
    for t in ("pgbouncer-xP", "sluice-auto", "sluice-w2"):
        confs = b.configs.get(t, {})
        if confs:
            first = next(iter(confs))
            L.append(f"{label(b, t)}, configuration for {first} (the other targets differ only in the lines "
                     f"naming workers or so_reuseport; TLS loads add the client_tls lines):\n")
            L.append("```ini")
            L.append(confs[first].replace(b.tmp, "$TMP").replace(H.PASSWORD, "...").strip())
            L.append("```\n")

    if any(r > 1 for _, r in b.plan.values()):
        L.append("### Every round\n")
        L.append("| load | target | round | TPS | proxy cores | proxy CPU µs/txn | pgbench cores | Postgres cores "
                 "| max backends | error |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in b.results:
            us = None if r.get("cpu_proxy") is None else r["cpu_proxy"] * 1000
            L.append(f"| {r['scenario']} | {label(b, r['target'])} | {r['round']} | {num(r.get('tps'), ',.0f')} | "
                     f"{num(r.get('cores_proxy'), '.2f')} | {sig(us)} | {num(r.get('cores_client'), '.2f')} | "
                     f"{num(r.get('cores_pg'), '.2f')} | {num(r.get('max_backends'), 'd')} | "
                     f"{cell(r.get('error', ''))} |")
        L.append("")

    with open(md_path, "w") as f:
        f.write("\n".join(L))
    with open(os.path.join(out_dir if b.o.out else H.WORK, "results-suites.json"), "w") as f:
        json.dump(dict(results=b.results, unavailable={f"{s}/{t}": v for (s, t), v in b.unavailable.items()},
                       notes=b.notes, plan=b.plan, pgbouncer_procs=b.pgbouncer_procs, jobs=b.jobs), f, indent=1)
    H.log(f"wrote {md_path}")
    end = next((i for i, l in enumerate(L) if l.startswith("### Exactly what ran")), len(L))
    print("\n".join(L[:end]))
