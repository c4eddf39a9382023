#!/bin/sh
# Builds each libFuzzer target with clang (libFuzzer, ASan, UBSan) and runs it for FUZZ_SECONDS
# over a working copy of its checked-in corpus; `make fuzz` calls it from the build directory with
# the compiler flags and libraries configure found. Everything goes to fuzz-build/: the binaries,
# the grown corpora (fuzz-build/corpus_<name>), each run's log, and any crasher as
# fuzz-build/crash-<name>-<hash>. Exits non-zero if a target crashed or could not be built.
#
#   run_fuzz.sh SRCDIR    (FUZZ_CC, FUZZ_CFLAGS, FUZZ_LIBS, FUZZ_SOURCES, FUZZ_TARGETS, FUZZ_SECONDS;
#                          FUZZ_ARGS adds libFuzzer options, e.g. -max_len=4096 or -jobs=2)
set -eu

srcdir=$1
out=fuzz-build
flags="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"
mkdir -p "$out/obj"

command -v "$FUZZ_CC" >/dev/null 2>&1 || {
    echo "run_fuzz.sh: $FUZZ_CC not found (on Debian: apt-get install clang)" >&2
    exit 2
}

# The library once, instrumented for coverage but without libFuzzer's main.
echo "fuzz: building the library with $FUZZ_CC"
for source in $FUZZ_SOURCES; do
    object="$out/obj/$(basename "$source" .c).o"
    if [ ! -e "$object" ] || [ "$srcdir/$source" -nt "$object" ]; then
        # shellcheck disable=SC2086
        $FUZZ_CC $flags -fsanitize=fuzzer-no-link $FUZZ_CFLAGS -c "$srcdir/$source" -o "$object"
    fi
done

failed=""
for target in $FUZZ_TARGETS; do
    binary="$out/fuzz_$target"
    seeds="$srcdir/tests/fuzz/corpus"
    [ "$target" = proto ] || seeds="${seeds}_$target"
    echo "fuzz: $target: building"
    # shellcheck disable=SC2086
    if ! $FUZZ_CC $flags -fsanitize=fuzzer $FUZZ_CFLAGS "$srcdir/tests/fuzz/fuzz_$target.c" \
        "$out"/obj/*.o $FUZZ_LIBS -o "$binary"; then
        failed="$failed $target(build)"
        continue
    fi
    mkdir -p "$out/corpus_$target"
    cp "$seeds"/* "$out/corpus_$target/"
    echo "fuzz: $target: running ${FUZZ_SECONDS}s (log: $out/fuzz_$target.log)"
    # shellcheck disable=SC2086
    if "$binary" -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$out/crash-$target-" ${FUZZ_ARGS:-} "$out/corpus_$target" \
        > "$out/fuzz_$target.log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/fuzz_$target.log" | grep -o '[0-9]*$' || true)
        echo "fuzz: $target: no crash in ${runs:-?} runs"
    else
        echo "fuzz: $target: CRASH, see $out/fuzz_$target.log"
        tail -40 "$out/fuzz_$target.log"
        failed="$failed $target"
    fi
done
if [ -n "$failed" ]; then
    echo "fuzz: failed:$failed"
    exit 1
fi
echo "fuzz: every target ran ${FUZZ_SECONDS}s without a crash"
