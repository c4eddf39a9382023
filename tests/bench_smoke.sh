#!/bin/sh
# Runs bench/run --smoke (seconds: one tiny round against direct PostgreSQL, PgBouncer and sluice)
# so the benchmark harness is proven to work on every check. Timings are never judged here, but every
# run must succeed: a failed sluice run fails this test as a failed reference run does
# (--require-sluice). SLUICE_BENCH_SMOKE_ARGS adds options (e.g. --sluice-bin) to bench/run.
srcdir=${SLUICE_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# shellcheck disable=SC2086
if "$srcdir/bench/run" --smoke --require-sluice ${SLUICE_BENCH_SMOKE_ARGS:-} > "$log" 2>&1; then
    echo "ok 1 - bench/run --smoke completes against direct PostgreSQL, PgBouncer and sluice"
else
    echo "not ok 1 - bench/run --smoke failed (exit status $?)"
    sed 's/^/# /' "$log" | tail -40
fi
echo "1..1"
