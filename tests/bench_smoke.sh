#!/bin/sh
# Runs bench/run --smoke (seconds: one tiny round against direct PostgreSQL, PgBouncer and sluice)
# so the benchmark harness is proven to work on every check. Timings are never judged here.
srcdir=${SLUICE_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if "$srcdir/bench/run" --smoke > "$log" 2>&1; then
    echo "ok 1 - bench/run --smoke completes against direct PostgreSQL, PgBouncer and sluice"
else
    echo "not ok 1 - bench/run --smoke failed (exit status $?)"
    sed 's/^/# /' "$log" | tail -40
fi
echo "1..1"
