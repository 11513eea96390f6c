#!/bin/sh
# Builds the libFuzzer targets with clang and runs each for a bounded time.
#
#   tests/fuzz/run.sh [SECONDS] [NAME...]   fuzz each target SECONDS (30)
#   tests/fuzz/run.sh --seeds               rewrite corpus/ from gen_seeds.c
#   tests/fuzz/run.sh --replay              replay corpus/ + regressions/
#                                           through the libFuzzer binaries
#
# NAMEs: frame command snapshot http json http_text (default: all).
#
# Build directory: $TN_FUZZ_BUILD_DIR (default build-fuzz), configured with
# CC=clang, TN_FUZZ=ON, TN_SANITIZE=address,undefined. The committed seeds
# (corpus/NAME) and crash reproducers (regressions/NAME) are read, never
# written: new coverage goes to BUILD/fuzz-corpus/NAME, crashes to
# BUILD/fuzz-artifacts/NAME/. To keep a crash as a regression test, copy it
# into regressions/NAME/ (the fuzz_replay_NAME test then runs it).
#
# Exits 0 when every target ran clean, 1 when one crashed (its reproducer and
# the report's tail are printed), 2 when clang or libFuzzer is missing.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FUZZ=$ROOT/tests/fuzz
BUILD=${TN_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}
ALL="frame command snapshot http json http_text"
MODE=fuzz
SECS=30

case "${1:-}" in
    --seeds) MODE=seeds; shift ;;
    --replay) MODE=replay; shift ;;
    [0-9]*) SECS=$1; shift ;;
esac
NAMES=${*:-$ALL}

if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz: clang is not installed (deploy/setup.sh installs it)" >&2
    exit 2
fi

echo "==> configuring $BUILD (clang, TN_FUZZ=ON, address,undefined)"
CC=clang cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DTN_FUZZ=ON -DTN_SANITIZE=address,undefined -DBUILD_TESTING=OFF >/dev/null

if [ "$MODE" = seeds ]; then
    cmake --build "$BUILD" -j "$(nproc)" --target fuzz_gen_seeds
    rm -rf "$FUZZ/corpus"
    ASAN_OPTIONS=detect_leaks=1 "$BUILD/tests/fuzz/fuzz_gen_seeds" "$FUZZ/corpus"
    exit 0
fi

echo "==> building the fuzz targets"
cmake --build "$BUILD" -j "$(nproc)" --target fuzz

# Halt on the first report of any sanitizer, with a stack; libFuzzer saves
# the input.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

maxLen() {
    case "$1" in
        snapshot|http|json) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

failed=
for n in $NAMES; do
    bin=$BUILD/tests/fuzz/fuzz_$n
    if [ ! -x "$bin" ]; then
        echo "fuzz: no target $n" >&2
        exit 2
    fi
    mkdir -p "$BUILD/fuzz-corpus/$n" "$BUILD/fuzz-artifacts/$n"
    log=$BUILD/fuzz-artifacts/$n.log
    if [ "$MODE" = replay ]; then
        set -- "$FUZZ/corpus/$n"
        [ -d "$FUZZ/regressions/$n" ] && set -- "$@" "$FUZZ/regressions/$n"
        echo "==> replaying $n"
        if "$bin" -runs=0 "$@" >"$log" 2>&1; then
            echo "fuzz: $n: clean ($(sed -n 's/.*seed corpus: files: \([0-9]*\).*/\1/p' "$log") inputs)"
        else
            failed="$failed $n"
            tail -40 "$log"
        fi
        continue
    fi
    set -- "$BUILD/fuzz-corpus/$n" "$FUZZ/corpus/$n"
    [ -d "$FUZZ/regressions/$n" ] && set -- "$@" "$FUZZ/regressions/$n"
    echo "==> fuzzing $n for ${SECS}s"
    start=$(date +%s)
    # -timeout: one input may take that long (the HTTP harness waits at most
    # 20 s for the server to close). -rss_limit_mb: well under the machine.
    if "$bin" -max_total_time="$SECS" -timeout=30 -rss_limit_mb=3072 \
        -max_len="$(maxLen "$n")" -print_final_stats=1 \
        -artifact_prefix="$BUILD/fuzz-artifacts/$n/" "$@" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
        echo "fuzz: $n: clean, ${runs:-?} runs in $(($(date +%s) - start))s," \
             "${cov:-cov: ?}, corpus $(ls "$BUILD/fuzz-corpus/$n" | wc -l) new"
    else
        failed="$failed $n"
        echo "fuzz: $n: FAILED; report (tail of $log):"
        tail -60 "$log"
        echo "fuzz: reproducers:"
        ls -l "$BUILD/fuzz-artifacts/$n/"
    fi
done

if [ -n "$failed" ]; then
    echo "fuzz: failed:$failed"
    exit 1
fi
echo "fuzz: all clean:$(echo " $NAMES")"
