#!/bin/sh
# The README's first command, for real: deploy/local-cluster.sh starts a
# 3-node cluster that answers 201 then 409 over HTTP, survives kill -9 of a
# node, restarts it, and stops cleanly. Runs on a free base port in a
# temporary directory so that it never touches a developer's cluster.
set -u

SRC=${TENURE_SOURCE_DIR:?}
BIN=${TENURE_BIN_DIR:?}
DIR=$(mktemp -d /tmp/tenure-lc.XXXXXX)
# Base ports below the kernel's ephemeral range (32768 and up), where the
# other tests' port-0 sockets live; retried on another base if a port is
# taken anyway.
BASE=$((20000 + ($$ % 120) * 100))
export TENURE_BIN_DIR=$BIN
LC="$SRC/deploy/local-cluster.sh"

fail() {
    echo "FAIL: $*" >&2
    for f in "$DIR"/node*/tenured.log; do
        [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; } >&2
    done
    "$LC" stop --dir "$DIR" >/dev/null 2>&1
    rm -rf "$DIR"
    exit 1
}

attempt=1
while :; do
    export TENURE_BASE_PORT=$BASE
    if "$LC" start --dir "$DIR" >"$DIR/start.out" 2>&1; then
        break
    fi
    [ $attempt -lt 3 ] || fail "start: $(cat "$DIR/start.out")"
    echo "start on base $BASE failed (port taken?), retrying" >&2
    "$LC" stop --dir "$DIR" >/dev/null 2>&1
    rm -rf "$DIR"
    DIR=$(mktemp -d /tmp/tenure-lc.XXXXXX)
    BASE=$((20000 + ((BASE - 20000) / 100 + 37) % 120 * 100))
    attempt=$((attempt + 1))
done
grep -q "leader: node" "$DIR/start.out" || fail "start did not print the leader"

H1=$((BASE + 201))
H2=$((BASE + 202))
code=$(curl -s -o "$DIR/a.json" -w '%{http_code}' -X PUT "localhost:$H1/v1/locks/demo" \
    -d '{"holder":"a","ttl_ms":10000}')
[ "$code" = 201 ] || fail "first acquire: $code $(cat "$DIR/a.json")"
code=$(curl -s -o "$DIR/b.json" -w '%{http_code}' -X PUT "localhost:$H2/v1/locks/demo" \
    -d '{"holder":"b","ttl_ms":10000}')
[ "$code" = 409 ] || fail "second holder: $code"
grep -q '"holder":"a"' "$DIR/b.json" || fail "409 does not name holder a: $(cat "$DIR/b.json")"

"$LC" kill 1 --dir "$DIR" >/dev/null || fail "kill 1"
"$LC" restart 1 --dir "$DIR" >/dev/null 2>&1 || fail "restart 1"
# The lock is still held, as seen from the restarted node (bounded wait).
i=0
while :; do
    body=$(curl -s "localhost:$H1/v1/locks/demo" || true)
    case "$body" in *'"state":"held"'*) break ;; esac
    i=$((i + 1))
    [ $i -lt 100 ] || fail "lock not held after restart: $body"
    sleep 0.1
done
"$LC" status --dir "$DIR" >/dev/null || fail "status after restart"
"$LC" stop --dir "$DIR" >/dev/null || fail "stop"
for p in "$DIR"/node*/tenured.pid; do
    [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null && fail "a node survived stop"
done
rm -rf "$DIR"
echo "ok: local-cluster start/201/409/kill/restart/stop"
