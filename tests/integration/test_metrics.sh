#!/bin/sh
# GET /metrics in the Prometheus text format, checked by promtool (issue 5).
#
# Starts 3 real tenured on 127.0.0.1 (free ports picked here), drives a
# workload through a follower and the leader so that every kind of series
# exists (grants, conflicts, renewals, releases, a stale token, an expiry
# into lock-delay, a late renew, a queued waiter, sessions, errors), then
# pipes each node's /metrics into `promtool check metrics` and fails on any
# complaint. It also checks that the metric families issue 5 asks for are
# served and count what the workload did.
#
# Environment (set by ctest): TENURE_BIN_DIR (where tenured is),
# TENURE_SOURCE_DIR. Needs curl and promtool (Debian `prometheus`, installed
# by deploy/setup.sh). Every wait is bounded.
set -eu

BIN=${TENURE_BIN_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/build}
TENURED=$BIN/tenured
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tenure-metrics-XXXXXX")
PIDS=
FAILED=0

fail() {
    echo "FAIL: $*" >&2
    FAILED=1
}

die() {
    echo "FAIL: $*" >&2
    exit 1
}

cleanup() {
    for p in $PIDS; do
        kill -9 "$p" 2>/dev/null || true
    done
    for p in $PIDS; do
        wait "$p" 2>/dev/null || true
    done
    if [ "$FAILED" != 0 ] || [ "${TENURE_DUMP_LOGS:-0}" != 0 ]; then
        for f in "$WORK"/n*.log; do
            [ -f "$f" ] || continue
            echo "----- $f (last 30 lines) -----" >&2
            tail -n 30 "$f" >&2
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

command -v curl >/dev/null 2>&1 || die "curl is missing (deploy/setup.sh installs it)"
command -v promtool >/dev/null 2>&1 ||
    die "promtool is missing: install the Debian package 'prometheus' (deploy/setup.sh does)"
[ -x "$TENURED" ] || die "$TENURED not found (set TENURE_BIN_DIR to the build dir)"

# ------------------------------------------------------------ the cluster

# A port in 20000..32767 (below the kernel's ephemeral range) that nothing
# uses right now and that this script has not handed out yet.
USED=
pick_port() {
    while :; do
        r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
        p=$((20000 + r % 12768))
        case " $USED " in *" $p "*) continue ;; esac
        if command -v ss >/dev/null 2>&1 &&
            ss -Htan 2>/dev/null | awk '{print $4}' | grep -q ":$p\$"; then
            continue
        fi
        USED="$USED $p"
        echo "$p"
        return
    done
}

# GET on 127.0.0.1:PORT PATH -> body on stdout; the status in $STATUS.
get() {
    STATUS=$(curl -s -m 5 -o "$WORK/body" -w '%{http_code}' "http://127.0.0.1:$1$2" || true)
    cat "$WORK/body" 2>/dev/null || true
}

# req METHOD PORT PATH [curl args...] -> status on stdout, body in $WORK/body.
req() {
    m=$1
    p=$2
    path=$3
    shift 3
    curl -s -m 10 -o "$WORK/body" -w '%{http_code}' -X "$m" "$@" "http://127.0.0.1:$p$path" || true
}

start_cluster() {
    PIDS=
    IC=
    for i in 1 2 3; do
        eval "RAFT$i=$(pick_port) RPC$i=$(pick_port) HTTP$i=$(pick_port)"
        eval "IC=\"\${IC:+\$IC,}$i=127.0.0.1:\$RAFT$i\""
    done
    for i in 1 2 3; do
        eval "raft=\$RAFT$i rpc=\$RPC$i http=\$HTTP$i"
        mkdir -p "$WORK/n$i"
        "$TENURED" --id "$i" --data "$WORK/n$i" --raft "127.0.0.1:$raft" \
            --rpc "127.0.0.1:$rpc" --http "127.0.0.1:$http" \
            --initial-cluster "$IC" --log-level info >>"$WORK/n$i.log" 2>&1 &
        PIDS="$PIDS $!"
    done
    # Every node healthy within 20 s (or one exited: maybe a port clash).
    for i in 1 2 3; do
        eval "http=\$HTTP$i"
        n=0
        while :; do
            get "$http" /healthz >/dev/null
            [ "$STATUS" = 200 ] && break
            for p in $PIDS; do
                kill -0 "$p" 2>/dev/null || return 1
            done
            n=$((n + 1))
            [ $n -lt 200 ] || return 1
            sleep 0.1
        done
    done
    return 0
}

attempt=1
until start_cluster; do
    for p in $PIDS; do kill -9 "$p" 2>/dev/null || true; done
    for p in $PIDS; do wait "$p" 2>/dev/null || true; done
    [ $attempt -lt 3 ] || die "could not start 3 nodes (see the logs)"
    attempt=$((attempt + 1))
    rm -rf "$WORK"/n*
    echo "start attempt failed; retrying with other ports" >&2
done

# The leader, once every node names the same one (bounded: 15 s).
LEADER=
n=0
while [ -z "$LEADER" ]; do
    ids=
    for i in 1 2 3; do
        eval "http=\$HTTP$i"
        id=$(get "$http" /v1/cluster | sed -n 's/.*"leader_id":\([0-9][0-9]*\).*/\1/p')
        ids="$ids ${id:-none}"
    done
    set -- $ids
    if [ "$1" != none ] && [ "$1" = "$2" ] && [ "$2" = "$3" ]; then
        LEADER=$1
    fi
    n=$((n + 1))
    [ $n -lt 150 ] || die "no leader agreed by all nodes:$ids"
    [ -n "$LEADER" ] || sleep 0.1
done
FOLLOWER=$((LEADER % 3 + 1))
eval "LP=\$HTTP$LEADER FP=\$HTTP$FOLLOWER"
echo "cluster up: leader node $LEADER (http $LP), follower node $FOLLOWER (http $FP)"

# A follower can relay once it knows the leader's address (bounded: 5 s).
n=0
while :; do
    get "$FP" /v1/locks/metrics/probe >/dev/null
    [ "$STATUS" = 200 ] && break
    n=$((n + 1))
    [ $n -lt 100 ] || die "the follower never relayed a read ($STATUS)"
    sleep 0.05
done

# ----------------------------------------------------------- the workload

expect() {
    want=$1
    shift
    got=$(req "$@")
    if [ "$got" != "$want" ]; then
        fail "$* -> $got, want $want: $(head -c 300 "$WORK/body")"
    fi
}

token_of_body() {
    sed -n 's/.*"token":\([0-9][0-9]*\).*/\1/p' "$WORK/body"
}

J='Content-Type: application/json'
expect 201 PUT "$FP" /v1/locks/m/a -H "$J" -d '{"holder":"a","ttl_ms":10000}'
TA=$(token_of_body)
expect 409 PUT "$LP" /v1/locks/m/a -H "$J" -d '{"holder":"b","ttl_ms":10000}'
expect 409 PUT "$FP" /v1/locks/m/a -H "$J" -d '{"holder":"b","ttl_ms":10000}'
expect 200 PUT "$FP" /v1/locks/m/a -H "If-Match: \"$TA\"" -d '{"ttl_ms":20000}'
expect 412 PUT "$LP" /v1/locks/m/a -H "If-Match: \"$((TA + 1))\""
expect 200 GET "$FP" /v1/locks/m/a
expect 204 GET "$LP" "/v1/fence/m/a?token=$TA"
expect 200 GET "$FP" "/v1/locks?prefix=m/"
# A waiter in the queue gets the lock when a releases (a queued acquire has
# a wait time).
(req PUT "$LP" /v1/locks/m/a -H "$J" -d '{"holder":"w","ttl_ms":10000,"wait_ms":8000}' >"$WORK/waiter.status") &
WAITER=$!
n=0
while :; do
    get "$LP" /v1/locks/m/a | grep -q '"queue_len":1' && break
    n=$((n + 1))
    [ $n -lt 100 ] || { fail "the waiter never queued"; break; }
    sleep 0.05
done
sleep 0.2
expect 204 DELETE "$FP" /v1/locks/m/a -H "If-Match: \"$TA\""
wait "$WAITER" || true
[ "$(cat "$WORK/waiter.status")" = 201 ] || fail "the waiter got $(cat "$WORK/waiter.status")"
# A lease that runs out into a lock-delay; a late renew (safety incident);
# an acquire during the lock-delay.
expect 201 PUT "$LP" /v1/locks/m/exp -H "$J" -d '{"holder":"x","ttl_ms":1000,"lock_delay_ms":3000}'
TX=$(token_of_body)
n=0
while :; do
    get "$LP" /v1/locks/m/exp | grep -q '"state":"lock-delay"' && break
    n=$((n + 1))
    [ $n -lt 120 ] || { fail "m/exp never expired"; break; }
    sleep 0.05
done
expect 410 PUT "$FP" /v1/locks/m/exp -H "If-Match: \"$TX\""
expect 409 PUT "$FP" /v1/locks/m/exp -H "$J" -d '{"holder":"y","ttl_ms":5000}'
# Sessions, and a few errors.
expect 201 POST "$FP" /v1/sessions -H "$J" -d '{"holder":"s","ttl_ms":10000}'
SID=$(sed -n 's/.*"session":\([0-9][0-9]*\).*/\1/p' "$WORK/body")
expect 201 PUT "$LP" /v1/locks/m/s -H "$J" -d "{\"session\":$SID}"
expect 200 PUT "$FP" "/v1/sessions/$SID"
expect 404 GET "$FP" /nowhere
expect 400 PUT "$LP" /v1/locks/m/bad -H "$J" -d '{"holder":'
expect 422 PUT "$FP" /v1/locks/m/bad -H "$J" -d '{"holder":"a","ttl_ms":0}'
# (the session stays open: the sessions gauge has something to show)

# ---------------------------------------------------- promtool, per node

for i in 1 2 3; do
    eval "http=\$HTTP$i"
    ctype=$(curl -s -m 5 -o "$WORK/metrics.$i" -w '%{content_type}' "http://127.0.0.1:$http/metrics" || true)
    case "$ctype" in
    "text/plain; version=0.0.4"*) ;;
    *) fail "node $i: /metrics Content-Type is '$ctype'" ;;
    esac
    [ -s "$WORK/metrics.$i" ] || { fail "node $i: empty /metrics"; continue; }
    if ! promtool check metrics <"$WORK/metrics.$i" >"$WORK/promtool.$i" 2>&1; then
        fail "node $i: promtool check metrics failed:"
        cat "$WORK/promtool.$i" >&2
    elif [ -s "$WORK/promtool.$i" ]; then
        fail "node $i: promtool check metrics complained:"
        cat "$WORK/promtool.$i" >&2
    else
        echo "node $i: promtool check metrics: clean ($(grep -c '^# TYPE' "$WORK/metrics.$i") families, $(grep -vc '^#' "$WORK/metrics.$i") samples)"
    fi
done

# ---------------------------------- the families issue 5 asks for (leader)

M=$WORK/metrics.$LEADER
family() {
    grep -q "^# TYPE $1 $2\$" "$M" || fail "leader: no $2 family $1"
}
# value NAME_WITH_LABELS -> the sample's value ("" if absent)
value() {
    awk -v n="$1" '$1 == n { print $2; exit }' "$M"
}
positive() {
    v=$(value "$1")
    case "$v" in
    "" | 0 | 0.0*) fail "leader: $1 is '${v:-absent}', want > 0" ;;
    esac
}

family tenure_acquire_total counter
family tenure_renew_total counter
family tenure_release_total counter
family tenure_acquire_duration_seconds histogram
family tenure_acquire_wait_seconds histogram
family tenure_lock_hold_seconds histogram
family tenure_conflicts_total counter
family tenure_session_expiries_total counter
family tenure_releases_total counter
family tenure_lock_delay_hits_total counter
family tenure_safety_incidents_total counter
family tenure_sessions gauge
family tenure_locks_held gauge
family tenure_raft_term gauge
family tenure_raft_commit_index gauge
family tenure_raft_applied_index gauge
family tenure_leader_changes_total counter
family tenure_requests_in_flight gauge
family tenure_http_requests_in_flight gauge
family tenure_http_responses_total counter
family tenure_http_conflicts_total counter

positive 'tenure_acquire_total{outcome="ok"}'
positive 'tenure_acquire_total{outcome="held"}'
positive 'tenure_renew_total{outcome="ok"}'
positive 'tenure_release_total{outcome="ok"}'
positive tenure_acquire_duration_seconds_count
positive tenure_acquire_wait_seconds_count
positive tenure_conflicts_total
positive tenure_session_expiries_total
positive tenure_releases_total
positive tenure_lock_delay_hits_total
positive tenure_safety_incidents_total
positive tenure_sessions
positive tenure_locks_held
positive tenure_raft_term
positive tenure_raft_commit_index
positive tenure_leader_changes_total
positive 'tenure_http_conflicts_total{kind="lock_held"}'
# Clean releases (the 204s above) are observed in the hold-time histogram.
positive tenure_lock_hold_seconds_count

if [ "$FAILED" != 0 ]; then
    exit 1
fi
echo "PASS: /metrics of all 3 nodes passes promtool check metrics"
