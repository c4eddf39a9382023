#!/bin/sh
# Replays the fuzz corpora through every parser the fuzz targets cover (proto.c and params.c,
# the pinning lexer, the prepared-statement code, the startup phase, SCRAM, auth tokens, the
# backend message reader, the admin console's tokenizer, the config parser), printing one TAP
# stream.
# Run from the build directory (make check does); SLUICE_SRCDIR is the source tree, and
# defaults to the tree this script lives in.
set -eu

srcdir=${SLUICE_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
n=0
for target in proto pinning prepared startup scram token backend admin config; do
    replay="./tests/fuzz/fuzz_${target}_replay"
    corpus="$srcdir/tests/fuzz/corpus"
    [ "$target" = proto ] || corpus="${corpus}_$target"
    if [ ! -x "$replay" ]; then
        echo "Bail out! $replay is not built in $(pwd): run this from the build directory"
        exit 1
    fi
    status=0
    "$replay" "$corpus" > "$out" 2>&1 || status=$?
    # Renumber each replay's results into the one stream; its own plan line is dropped.
    while IFS= read -r line; do
        case "$line" in
        "ok "*) n=$((n + 1)); echo "ok $n ${target}: ${line#ok * }" ;;
        "not ok "*) n=$((n + 1)); echo "not ok $n ${target}: ${line#not ok * }" ;;
        "1.."*) ;;
        *) echo "# $line" ;;
        esac
    done < "$out"
    n=$((n + 1))
    if [ "$status" -eq 0 ]; then
        echo "ok $n - fuzz_${target}_replay finished its corpus"
    else
        echo "not ok $n - fuzz_${target}_replay exited with status $status"
    fi
done
echo "1..$n"
