#!/bin/sh
# The status page GET / rendered by headless Chromium (issue 5).
#
# Starts 3 real tenured on 127.0.0.1, takes two locks (one with a holder
# name full of HTML), makes one conflict, then loads http://NODE/ in
# headless Chromium from a follower and from the leader, lets the page's
# JavaScript run (--virtual-time-budget), and checks the rendered DOM: the
# three members with their state (leader / follower) and health, the
# leader, the term (as /v1/cluster says), the locks with their holders and
# time left, holder names shown as text (never as markup), no error, and
# the contention table (leader) or the pointer to the leader's page
# (follower). Then, with two nodes killed, the survivor's page still
# renders: no leader, two members unreachable, its stale view of the locks.
#
# Environment (set by ctest): TENURE_BIN_DIR, TENURE_SOURCE_DIR. Needs curl
# and chromium (both installed by deploy/setup.sh); fails loudly without
# them. Every wait is bounded.
set -eu

BIN=${TENURE_BIN_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/build}
TENURED=$BIN/tenured
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tenure-page-XXXXXX")
PIDS=
FAILED=0

fail() {
    echo "FAIL: $*" >&2
    FAILED=1
}

die() {
    echo "FAIL: $*" >&2
    FAILED=1
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
        for f in "$WORK"/n*.log "$WORK"/chromium.*.err; do
            [ -f "$f" ] || continue
            echo "----- $f (last 30 lines) -----" >&2
            tail -n 30 "$f" >&2
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

CHROMIUM=
for c in chromium chromium-browser; do
    if command -v "$c" >/dev/null 2>&1; then
        CHROMIUM=$c
        break
    fi
done
[ -n "$CHROMIUM" ] ||
    die "chromium is missing: install the Debian package 'chromium' (deploy/setup.sh does)"
command -v curl >/dev/null 2>&1 || die "curl is missing (deploy/setup.sh installs it)"
[ -x "$TENURED" ] || die "$TENURED not found (set TENURE_BIN_DIR to the build dir)"

# ------------------------------------------------------------ the cluster

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

get() {
    STATUS=$(curl -s -m 5 -o "$WORK/body" -w '%{http_code}' "http://127.0.0.1:$1$2" || true)
    cat "$WORK/body" 2>/dev/null || true
}

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

n=0
while :; do
    get "$FP" /v1/locks/page/probe >/dev/null
    [ "$STATUS" = 200 ] && break
    n=$((n + 1))
    [ $n -lt 100 ] || die "the follower never relayed a read ($STATUS)"
    sleep 0.05
done

# ------------------------------------------------------------- the locks

J='Content-Type: application/json'
st=$(req PUT "$FP" /v1/locks/page/demo -H "$J" -d '{"holder":"page-holder-1","ttl_ms":60000}')
[ "$st" = 201 ] || die "acquire page/demo: $st $(cat "$WORK/body")"
TOKEN=$(sed -n 's/.*"token":\([0-9][0-9]*\).*/\1/p' "$WORK/body")
st=$(req PUT "$LP" /v1/locks/page/html -H "$J" -d '{"holder":"<img src=x onerror=alert(1)>&amp;","ttl_ms":60000}')
[ "$st" = 201 ] || die "acquire page/html: $st $(cat "$WORK/body")"
st=$(req PUT "$FP" /v1/locks/page/demo -H "$J" -d '{"holder":"rival","ttl_ms":60000}')
[ "$st" = 409 ] || die "conflict on page/demo: $st $(cat "$WORK/body")"
TERM_NOW=$(get "$LP" /v1/cluster | sed -n 's/.*"term":\([0-9][0-9]*\).*/\1/p')
[ -n "$TERM_NOW" ] || die "no term in /v1/cluster"

# ------------------------------------------------------ render and check

# render PORT NAME: the DOM after the page's scripts ran, in $WORK/NAME.html
render() {
    profile=$(mktemp -d "$WORK/profile-XXXXXX")
    if ! timeout 90 "$CHROMIUM" --headless --no-sandbox --disable-gpu \
        --disable-quic --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --disable-dev-shm-usage \
        --user-data-dir="$profile" --virtual-time-budget=5000 \
        --dump-dom "http://127.0.0.1:$1/" >"$WORK/$2.html" 2>"$WORK/chromium.$2.err"; then
        fail "$2: chromium failed (exit $?)"
        return 1
    fi
    [ -s "$WORK/$2.html" ] || { fail "$2: chromium rendered nothing"; return 1; }
    return 0
}

# has NAME TEXT [WHAT]: the DOM of NAME contains TEXT (fixed string).
has() {
    if ! grep -qF -- "$2" "$WORK/$1.html"; then
        fail "$1: the page does not show ${3:-$2}"
    fi
}

# hasre NAME REGEX WHAT: the DOM of NAME matches the extended REGEX.
hasre() {
    if ! grep -qE -- "$2" "$WORK/$1.html"; then
        fail "$1: the page does not show $3"
    fi
}

hasnt() {
    if grep -qF -- "$2" "$WORK/$1.html"; then
        fail "$1: the page shows ${3:-$2}"
    fi
}

check_page() {
    name=$1
    self=$2
    self_state=$3
    hasre "$name" "<b id=\"leader\"[^>]*>$LEADER at 127\\.0\\.0\\.1:$LP</b>" "the leader ($LEADER)"
    hasre "$name" "<b id=\"term\"[^>]*>$TERM_NOW</b>" "term $TERM_NOW"
    hasre "$name" "<b id=\"node\"[^>]*>$self \\($self_state\\)</b>" "node $self ($self_state)"
    has "$name" '<div id="error"></div>' "no error"
    for i in 1 2 3; do
        if [ "$i" = "$LEADER" ]; then
            state=leader
        else
            state=follower
        fi
        has "$name" "<tr data-member=\"$i\" data-state=\"$state\">" "member $i as $state"
        eval "http=\$HTTP$i"
        has "$name" "<td class=\"mono\">127.0.0.1:$http</td>" "member $i's address"
    done
    n=$(grep -o '<td class="ok">ready</td>' "$WORK/$name.html" | wc -l)
    [ "$n" -eq 3 ] || fail "$name: $n members shown ready, want 3"
    has "$name" '<tr data-resource="page/demo" data-holder="page-holder-1">' "page/demo held by page-holder-1"
    has "$name" "<td class=\"mono\">$TOKEN</td>" "page/demo's token"
    # time left: the leader knows it, the page shows seconds (never "?")
    row=$(grep -o '<tr data-resource="page/demo"[^$]*' "$WORK/$name.html" |
        sed 's|</tr>.*||')
    echo "$row" | grep -qE '<td>[0-9]+\.[0-9] s</td>' ||
        fail "$name: no time left for page/demo: $row"
    # the HTML-laden holder name is text, never markup
    has "$name" '&lt;img src=x onerror=alert(1)&gt;&amp;amp;' "the escaped holder name"
    hasnt "$name" '<img src="x"' "the holder name as an <img> element"
}

if render "$FP" follower; then
    check_page follower "$FOLLOWER" follower
    has follower '<div id="contention-note" class="muted">This node is not the leader; contention is tracked by the leader' "the pointer to the leader"
    has follower "<a href=\"http://127.0.0.1:$LP/\">" "a link to the leader's page"
fi
if render "$LP" leader; then
    check_page leader "$LEADER" leader
    # the conflict on page/demo makes it the most contended resource
    has leader '<td class="mono">page/demo</td><td>1</td>' "page/demo with 1 conflict under Most contended"
    has leader '<div id="contention-note" class="muted"></div>' "no note about the leader"
fi

# Without quorum: kill the leader and the other follower. The survivor's
# page still renders: no leader, two members unreachable, and the locks
# from its own (stale) view, saying so.
OTHER=$((FOLLOWER % 3 + 1))
[ "$OTHER" != "$LEADER" ] || OTHER=$((OTHER % 3 + 1))
set -- $PIDS
for i in "$LEADER" "$OTHER"; do
    eval "pid=\${$i}"
    kill -9 "$pid" 2>/dev/null || true
done
n=0
while :; do
    get "$FP" /readyz >/dev/null
    [ "$STATUS" = 503 ] && break
    n=$((n + 1))
    [ $n -lt 200 ] || { fail "the survivor never noticed the lost quorum ($STATUS)"; break; }
    sleep 0.05
done
if render "$FP" alone; then
    hasre alone '<b id="leader"[^>]*>none</b>' "no leader"
    n=$(grep -o '<td class="bad">unreachable</td>' "$WORK/alone.html" | wc -l)
    [ "$n" -eq 2 ] || fail "alone: $n members shown unreachable, want 2"
    has alone '<tr data-resource="page/demo" data-holder="page-holder-1">' "page/demo from the stale view"
    has alone '<div id="locks-note" class="muted">No leader reachable' "that the view may be stale"
fi

if [ "$FAILED" != 0 ]; then
    for f in "$WORK"/follower.html "$WORK"/leader.html "$WORK"/alone.html; do
        [ -f "$f" ] || continue
        echo "----- $f (body) -----" >&2
        sed -n '/<body>/,/<script>/p' "$f" >&2
    done
    exit 1
fi
echo "PASS: the status page renders members, leader, term, locks and contention from a follower and the leader"
