#!/bin/sh
# Runs one tnbench workload on a fresh local 3-node cluster and prints the
# table: starts the cluster in a temporary directory on free ports (never
# the default 7000 range), runs the workload, stops and deletes the cluster.
#
#   tests/bench/run.sh WORKLOAD [tnbench options...]
#   tests/bench/run.sh rpc-cycle --clients 64 --duration 10
#   tests/bench/run.sh smoke          # a few hundred ops of each kind, < 10 s
#   tests/bench/run.sh all            # the set of issue 7, a fresh cluster each
#
# WORKLOAD: http-cycle rpc-cycle contend failover fill smoke all
# Environment: TENURE_BIN_DIR (build dir with tenured and tests/bench/tnbench;
# default build-bench, else build), TENURE_BASE_PORT (default: the first free
# of 24000, 24400, ...), TENURE_LOG_LEVEL (default info), TNBENCH_KEEP=1 keeps
# the cluster's directory (logs) after the run.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PROG=tests/bench/run.sh

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
}

[ $# -ge 1 ] || {
    usage >&2
    exit 2
}
WORKLOAD=$1
shift
case $WORKLOAD in
    -h | --help | help)
        usage
        exit 0
        ;;
    http-cycle | rpc-cycle | contend | failover | fill | smoke) ;;
    all)
        # Each on its own fresh cluster; extra arguments go to every run.
        sh "$0" http-cycle --clients 64 --duration 10 "$@"
        sh "$0" rpc-cycle --clients 64 --duration 10 "$@"
        sh "$0" rpc-cycle --clients 64 --requeue-early --duration 10 "$@"
        sh "$0" rpc-cycle --clients 64 --conns 8 --duration 10 "$@"
        sh "$0" contend --clients 16 --duration 10 "$@"
        sh "$0" contend --clients 16 --requeue-early --duration 10 "$@"
        sh "$0" contend --clients 16 --conns 1 --duration 10 "$@"
        sh "$0" failover --clients 16 --repeat 5 "$@"
        sh "$0" fill --locks 100000 --sessions 100000 --duration 10 "$@"
        exit 0
        ;;
    *)
        echo "$PROG: unknown workload '$WORKLOAD'" >&2
        usage >&2
        exit 2
        ;;
esac

if [ -z "${TENURE_BIN_DIR:-}" ]; then
    if [ -x "$ROOT/build-bench/tests/bench/tnbench" ]; then
        TENURE_BIN_DIR=$ROOT/build-bench
    else
        TENURE_BIN_DIR=$ROOT/build
    fi
fi
TNBENCH=$TENURE_BIN_DIR/tests/bench/tnbench
for f in "$TENURE_BIN_DIR/tenured" "$TNBENCH"; do
    [ -x "$f" ] || {
        echo "$PROG: $f is not built (cmake --build $TENURE_BIN_DIR)" >&2
        exit 1
    }
done
export TENURE_BIN_DIR

port_busy() {
    [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

base_free() {
    for i in 1 2 3; do
        for off in 0 100 200; do
            if port_busy $(($1 + off + i)); then
                return 1
            fi
        done
    done
    return 0
}

if [ -z "${TENURE_BASE_PORT:-}" ]; then
    command -v ss >/dev/null 2>&1 || {
        echo "$PROG: ss (iproute2) is needed to find free ports; or set TENURE_BASE_PORT" >&2
        exit 1
    }
    b=24000
    while ! base_free $b; do
        b=$((b + 400))
        [ $b -le 60000 ] || {
            echo "$PROG: no free port range found" >&2
            exit 1
        }
    done
    TENURE_BASE_PORT=$b
fi
export TENURE_BASE_PORT
BASE=$TENURE_BASE_PORT

DIR=$(mktemp -d "${TMPDIR:-/tmp}/tnbench.XXXXXX")
CLUSTER="$ROOT/deploy/local-cluster.sh"

cleanup() {
    rc=$?
    sh "$CLUSTER" stop --dir "$DIR" >/dev/null 2>&1 || true
    if [ "${TNBENCH_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        # Keep the logs of a failed run.
        echo "cluster directory kept: $DIR (logs: $DIR/node*/tenured.log)" >&2
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! sh "$CLUSTER" start --dir "$DIR" >"$DIR/start.log" 2>&1; then
    cat "$DIR/start.log" >&2
    echo "$PROG: the cluster did not start" >&2
    exit 1
fi

RPC=127.0.0.1:$((BASE + 101)),127.0.0.1:$((BASE + 102)),127.0.0.1:$((BASE + 103))
HTTP=127.0.0.1:$((BASE + 201)),127.0.0.1:$((BASE + 202)),127.0.0.1:$((BASE + 203))

echo "# $(date -u '+%Y-%m-%dT%H:%M:%SZ') $(uname -n) $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); cluster $DIR base $BASE"

bench() {
    "$TNBENCH" --rpc "$RPC" --http "$HTTP" --cluster-dir "$DIR" \
        --cluster-script "$CLUSTER" "$@"
}

if [ "$WORKLOAD" = smoke ]; then
    # Tiny runs that check the tool end to end; each exits non-zero on a
    # safety violation or when nothing completed. First, the checker must
    # catch planted violations.
    "$TNBENCH" --self-test
    bench --workload rpc-cycle --clients 16 --warmup 0 --max-ops 300 --duration 5 --quiet "$@"
    bench --workload rpc-cycle --clients 16 --requeue-early --warmup 0 --max-ops 300 --duration 5 --quiet "$@"
    bench --workload http-cycle --clients 16 --warmup 0 --max-ops 200 --duration 5 --quiet "$@"
    bench --workload contend --clients 8 --warmup 0 --max-ops 200 --duration 5 --quiet "$@"
    bench --workload contend --clients 8 --conns 2 --requeue-early --warmup 0 --max-ops 200 --duration 5 --quiet "$@"
    echo "bench smoke: passed"
    exit 0
fi

bench --workload "$WORKLOAD" "$@"
