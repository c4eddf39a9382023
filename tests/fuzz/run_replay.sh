#!/bin/sh
# Replays the fuzz corpus through every parser in proto.c and params.c, printing TAP.
# Run from the build directory (make check does); SLUICE_SRCDIR is the source tree, and
# defaults to the tree this script lives in.
set -eu

srcdir=${SLUICE_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
replay=./tests/fuzz/fuzz_proto_replay

if [ ! -x "$replay" ]; then
    echo "Bail out! $replay is not built in $(pwd): run this from the build directory"
    exit 1
fi
exec "$replay" "$srcdir/tests/fuzz/corpus"
