#!/bin/sh
# tenure's HTTP shim and a 3-member etcd under the same load generator
# (shared/yardstick's lockbench, the one that measured etcd for issue 7), on
# this machine, one after the other, each on a fresh cluster; prints a table.
#
#   tests/bench/compare.sh [--duration S] [--runs N] [--only tenure|etcd]
#
# Workloads: `lock` at 64 clients (tenure: PUT + DELETE with If-Match; etcd:
# lease grant, lock, unlock, revoke), `lock-pregrant` at 64 (etcd only: lock +
# unlock with a lease granted once), `contend` at 16 on one resource
# (lockbench retries a busy lock itself, 1 ms jittered backoff).
# Environment: YARDSTICK (default <repo>/../shared/yardstick), TENURE_BIN_DIR
# (default build-bench, else build), ETCD (default: etcd in PATH; Debian's
# etcd-server), TENURE_BASE_PORT (default 24800). etcd listens on
# 127.0.0.1:23791-23793 (peers 23801-23803).
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PROG=tests/bench/compare.sh
DURATION=10
RUNS=1
ONLY=

while [ $# -gt 0 ]; do
    case $1 in
        --duration) DURATION=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "$PROG: unknown option '$1'" >&2; exit 2 ;;
    esac
done

YARDSTICK=${YARDSTICK:-$ROOT/../shared/yardstick}
ETCD=${ETCD:-$(command -v etcd || true)}
if [ -z "${TENURE_BIN_DIR:-}" ]; then
    if [ -x "$ROOT/build-bench/tenured" ]; then
        TENURE_BIN_DIR=$ROOT/build-bench
    else
        TENURE_BIN_DIR=$ROOT/build
    fi
fi
export TENURE_BIN_DIR
TENURE_BASE_PORT=${TENURE_BASE_PORT:-24800}
export TENURE_BASE_PORT

WORK=$(mktemp -d /tmp/tn-compare.XXXXXX)
ETCD_PIDS=
cleanup() {
    for p in $ETCD_PIDS; do
        kill "$p" 2>/dev/null || true
    done
    "$ROOT/deploy/local-cluster.sh" stop --dir "$WORK/tenure" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Build lockbench out of tree (the yardstick's folder may be read-only).
[ -f "$YARDSTICK/lockbench.c" ] || {
    echo "$PROG: no lockbench sources in $YARDSTICK (set YARDSTICK)" >&2
    exit 1
}
cp -r "$YARDSTICK" "$WORK/yardstick"
make -s -C "$WORK/yardstick" >/dev/null
LB=$WORK/yardstick/lockbench

# One field of lockbench's JSON: num KEY (top level) or lat OP PCT.
num() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" "$1"; }
lat() {
    sed -n "s/.*\"$2\":{\"n\":[0-9]*,\"mean\":[0-9.]*,\"p50\":\([0-9.]*\),\"p90\":[0-9.]*,\"p99\":\([0-9.]*\).*/\1 \2/p" "$1"
}

ROWS=$WORK/rows
: >"$ROWS"
bench() { # SYSTEM WORKLOAD CLIENTS ENDPOINTS [extra lockbench args]
    sys=$1 wl=$2 c=$3 eps=$4
    shift 4
    b=shim
    [ "$sys" = etcd ] && b=etcd
    r=1
    while [ "$r" -le "$RUNS" ]; do
        out=$WORK/$sys-$wl-$r.json
        "$LB" -b "$b" -w "$wl" -c "$c" -d "$DURATION" -W 2 -t 10000 \
            -e "$eps" -p "cmp$$-$r/" "$@" >"$out"
        acq=$(lat "$out" acquire)
        printf '%-7s %-14s %4s %10s %9s %9s %7s %6s\n' "$sys" "$wl" "$c" \
            "$(num "$out" ops_per_s)" \
            "$(echo "$acq" | awk '{printf "%.2f", $1 / 1000}')" \
            "$(echo "$acq" | awk '{printf "%.2f", $2 / 1000}')" \
            "$(num "$out" errors)" \
            "$(($(num "$out" mutex_violations) + $(num "$out" fence_violations)))" \
            >>"$ROWS"
        tail -n 1 "$ROWS"
        r=$((r + 1))
    done
}

echo "== $PROG: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%Y-%m-%d %H:%M UTC')"

if [ "$ONLY" != etcd ]; then
    "$ROOT/deploy/local-cluster.sh" start --dir "$WORK/tenure" >/dev/null
    LEADER=
    for i in 1 2 3; do
        port=$((TENURE_BASE_PORT + 200 + i))
        if curl -fsS "http://127.0.0.1:$port/v1/cluster" 2>/dev/null |
            grep -q '"state":"leader"'; then
            LEADER=127.0.0.1:$port
        fi
    done
    [ -n "$LEADER" ] || {
        echo "$PROG: the tenure cluster has no leader" >&2
        exit 1
    }
    bench tenure lock 64 "$LEADER"
    bench tenure contend 16 "$LEADER" -H 0
    "$ROOT/deploy/local-cluster.sh" stop --dir "$WORK/tenure" >/dev/null
fi

if [ "$ONLY" != tenure ]; then
    [ -n "$ETCD" ] || {
        echo "$PROG: etcd is not installed (apt-get install etcd-server)" >&2
        exit 1
    }
    peers=e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803
    for i in 1 2 3; do
        "$ETCD" --name "e$i" --data-dir "$WORK/etcd/e$i" \
            --listen-client-urls "http://127.0.0.1:2379$i" \
            --advertise-client-urls "http://127.0.0.1:2379$i" \
            --listen-peer-urls "http://127.0.0.1:2380$i" \
            --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
            --initial-cluster "$peers" --initial-cluster-state new \
            --initial-cluster-token "tn-compare-$$" \
            >"$WORK/etcd-e$i.log" 2>&1 &
        ETCD_PIDS="$ETCD_PIDS $!"
    done
    EPS=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793
    n=0
    until curl -fsS -X POST -d '{}' http://127.0.0.1:23791/v3/maintenance/status 2>/dev/null |
        grep -q '"leader"'; do
        n=$((n + 1))
        [ "$n" -lt 100 ] || {
            echo "$PROG: etcd did not start (logs in $WORK)" >&2
            exit 1
        }
        sleep 0.2
    done
    bench etcd lock 64 "$EPS"
    bench etcd lock-pregrant 64 "$EPS"
    bench etcd contend 16 "$EPS" -H 0
fi

echo
printf '%-7s %-14s %4s %10s %9s %9s %7s %6s\n' system workload cli ops/s \
    "acq p50" "acq p99" errors unsafe
sort -s -k1,1 -k2,2 "$ROWS"
echo "(acquire latencies in ms; unsafe = mutex + fence violations lockbench saw)"
