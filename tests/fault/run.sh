#!/bin/sh
# Runs the tenure fault harness (see docs/reliability.md).
#
#   tests/fault/run.sh                 short profile: every fault kind once
#                                      on 3 nodes, then partitions, a leader
#                                      kill and a leader pause on 5 nodes
#   tests/fault/run.sh --long          long profile: 140 faults on 3 nodes,
#                                      then 70 on 5 nodes (about 40 minutes)
#   tests/fault/run.sh --seed N        reproduce a run (same schedule)
#   tests/fault/run.sh --nodes 5       only the 5-node part (or 3)
#   tests/fault/run.sh -- ARGS...      pass ARGS to every tenure-fault run
#                                      (e.g. -- --only split --keep)
#
# Builds tenure-fault into $TENURE_BUILD_DIR (default <repo>/build) unless
# --harness PATH is given (ctest does). Needs root for network namespaces,
# nft and loop mounts; without them those faults are skipped with a printed
# reason. Always removes the namespaces, links, mounts and temp dirs of
# runs whose process is gone, on exit too.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${TENURE_BUILD_DIR:-$ROOT/build}
HARNESS=
BIN=
LONG=0
SEED=
NODES=
CTEST=0
while [ $# -gt 0 ]; do
    case $1 in
        --long) LONG=1; shift ;;
        --seed) SEED=$2; shift 2 ;;
        --nodes) NODES=$2; shift 2 ;;
        --harness) HARNESS=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --ctest) CTEST=1; shift ;;
        --) shift; break ;;
        -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ -z "$HARNESS" ]; then
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    fi
    cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)" \
        --target tenure-fault tenured >/dev/null
    HARNESS=$BUILD/tests/fault/tenure-fault
    BIN=$BUILD
fi
[ -n "$BIN" ] || BIN=$(dirname "$HARNESS")/../..

cleanup() {
    "$HARNESS" --sweep 2>/dev/null || true
}
trap 'exit 130' INT TERM HUP

if [ -z "$SEED" ]; then
    SEED=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
fi
echo "fault: seed $SEED (reproduce: tests/fault/run.sh --seed $SEED$([ $LONG = 1 ] && echo ' --long'))"

status=0
summaries=
SUMMARY=$(mktemp)
trap 'rm -f "$SUMMARY"; cleanup' EXIT
run() {
    rc=0
    "$HARNESS" --seed "$SEED" --bin "$BIN" "$@" >"$SUMMARY" || rc=$?
    cat "$SUMMARY"
    out=$(grep '^fault summary:' "$SUMMARY" || echo "fault summary: $* exit=$rc (no summary)")
    summaries="$summaries
$out"
    if [ "$rc" != 0 ] || ! echo "$out" | grep -q 'result=PASS'; then
        status=1
    fi
}

if [ "$LONG" = 1 ]; then
    [ -z "$NODES" ] || [ "$NODES" = 3 ] && run --nodes 3 --long --faults 140 "$@"
    [ -z "$NODES" ] || [ "$NODES" = 5 ] && run --nodes 5 --long --faults 70 "$@"
else
    [ -z "$NODES" ] || [ "$NODES" = 3 ] && run --nodes 3 "$@"
    [ -z "$NODES" ] || [ "$NODES" = 5 ] && run --nodes 5 \
        --only split,isolate-leader,kill-leader,pause-leader "$@"
fi

echo
echo "fault results:$summaries"
if [ "$status" = 0 ]; then
    echo "fault: PASS (seed $SEED)"
else
    echo "fault: FAIL — reproduce with: tests/fault/run.sh --seed $SEED$([ $LONG = 1 ] && echo ' --long')"
fi
exit $status
