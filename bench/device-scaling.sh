#!/usr/bin/env bash
# The scaling suite (bench/run --scaling) on a bare machine, from a bundle made by
# ../shared/device/make-bundle: PostgreSQL 15, pgbench, psql, PgBouncer, openssl and sluice, all
# under /tmp/b. Needs only bash, tar with xz and python3's standard library there; run as root, it
# starts the servers as an unprivileged user (postgres, or nobody where there is none).
#
#   bench/device-scaling.sh [bench/run options...]     e.g. --quick, or --scaling --workers-cost
#
# BUNDLE: the bundle (default .bundle/b.tar.xz in this clone), unpacked to /tmp/b on every call.
# OUT: where the results go (default /tmp/b/out): SCALING.md, results-suites.json, run.log (the
# console) and logs/ (every proxy's and Postgres's log and configuration). Nothing is written
# outside /tmp/b and OUT. Exit status: bench/run's.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
bundle="${BUNDLE:-$repo/.bundle/b.tar.xz}"
out="${OUT:-/tmp/b/out}"

[ -r "$bundle" ] || { echo "device-scaling: no bundle at $bundle (see bench/README.md)" >&2; exit 2; }
# --no-overwrite-dir: directories that exist already keep their owner and mode.
tar --no-overwrite-dir -xJf "$bundle" -C /
export PATH=/tmp/b/usr/lib/postgresql/15/bin:/tmp/b/bin:$PATH

# bench/ itself runs from /tmp/b/bench, so that its work directory is under /tmp/b too.
rm -rf /tmp/b/bench
mkdir -p /tmp/b/bench "$out/logs"
tar -C "$here" --exclude=./work -cf - . | tar -C /tmp/b/bench -xf -

label="the bundle's sluice"
[ -s "$repo/.bundle/COMMIT" ] && label="git commit $(head -c 40 "$repo/.bundle/COMMIT")"
{
  echo "[device-scaling] $(nproc) cores; python3 $(python3 -c 'import sys; print(sys.version.split()[0])')"
  for p in postgres pgbench psql pgbouncer openssl; do echo "[device-scaling] $p: $(command -v "$p")"; done
  # what bounds a run of -C on loopback: TIME_WAIT reuse, the ports a client can take, the accept queue
  for k in ipv4/tcp_tw_reuse ipv4/ip_local_port_range core/somaxconn; do
    echo "[device-scaling] net.${k/\//.} = $(tr '\t' ' ' < "/proc/sys/net/$k" 2>/dev/null || echo '?')"
  done
} | tee "$out/run.log"

rc=0
BENCH_NO_INSTALL=1 /tmp/b/bench/run --scaling --sluice-bin /tmp/b/bin/sluice --sluice-label "$label" \
  --tmpdir /tmp/b --out "$out" --keep "$@" 2>&1 | tee -a "$out/run.log" || rc=$?  # pipefail: bench/run's status

# The scratch directory (kept for its logs): logs and configurations to OUT, then away.
for d in /tmp/b/sluice-bench-*; do
  [ -d "$d" ] || continue
  find "$d" -maxdepth 1 -type f \( -name '*.log' -o -name '*.ini' \) -exec cp {} "$out/logs/" \;
  rm -rf "$d"
done
echo "[device-scaling] results in $out (exit status $rc)"
exit "$rc"
