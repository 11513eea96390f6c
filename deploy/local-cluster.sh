#!/bin/sh
# Runs a local tenure cluster on 127.0.0.1 for trying things out.
# See usage() below, or: deploy/local-cluster.sh --help
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROG=deploy/local-cluster.sh
BIN_DIR=${TENURE_BIN_DIR:-$ROOT/build}
TENURED=$BIN_DIR/tenured
LOG_LEVEL=${TENURE_LOG_LEVEL:-info}
TENURED_ARGS=${TENURED_ARGS:-} # more tenured flags for every node, e.g. --max-inflight 8
START_TIMEOUT=${TENURE_START_TIMEOUT:-30} # seconds to wait for a leader
STOP_TIMEOUT=10                            # seconds between SIGTERM and SIGKILL

usage() {
    cat <<EOF
usage: $PROG COMMAND [--nodes 1|3|5] [--dir DIR]

commands:
  start        start the cluster (running deploy/setup.sh first when
               tenured is not built), wait for a leader, print endpoints
  stop         stop the nodes this script started (SIGTERM, then SIGKILL)
  status       show each node (up/down, endpoints) and the leader;
               exits 0 when every node is up, 1 otherwise
  kill N       kill -9 node N
  restart N    kill -9 node N if it runs, then start it again
  clean        stop, then delete the cluster's data, logs and pid files

options:
  --nodes N    cluster size on first start: 1, 3 (default) or 5; later
               commands use the size recorded in DIR
  --dir DIR    where data, logs and pid files live (default: <repo>/.cluster)

Node i listens on 127.0.0.1: Raft port BASE+i, RPC BASE+100+i, HTTP
BASE+200+i, with BASE from TENURE_BASE_PORT (default 7000). Each node keeps
DIR/node<i>/data, DIR/node<i>/tenured.log and DIR/node<i>/tenured.pid.
Environment: TENURE_BASE_PORT, TENURE_BIN_DIR (default <repo>/build),
TENURE_LOG_LEVEL (default info), TENURE_START_TIMEOUT (default 30 s),
TENURED_ARGS (more tenured flags for every node).
EOF
}

usage_error() {
    echo "$PROG: $*" >&2
    echo "usage: $PROG start|stop|status|kill N|restart N|clean [--nodes 1|3|5] [--dir DIR]" >&2
    exit 2
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

# ------------------------------------------------------------ arguments
CMD=
NODE=
NODES_OPT=
DIR_OPT=
while [ $# -gt 0 ]; do
    case $1 in
        -h | --help | help)
            usage
            exit 0
            ;;
        --nodes)
            [ $# -ge 2 ] || usage_error "--nodes needs a value"
            NODES_OPT=$2
            shift 2
            ;;
        --nodes=*)
            NODES_OPT=${1#--nodes=}
            shift
            ;;
        --dir)
            if [ $# -lt 2 ] || [ -z "$2" ]; then
                usage_error "--dir needs a value"
            fi
            DIR_OPT=$2
            shift 2
            ;;
        --dir=*)
            DIR_OPT=${1#--dir=}
            [ -n "$DIR_OPT" ] || usage_error "--dir needs a value"
            shift
            ;;
        -*) usage_error "unknown option: $1" ;;
        *)
            if [ -z "$CMD" ]; then
                CMD=$1
            elif [ -z "$NODE" ]; then
                NODE=$1
            else
                usage_error "unexpected argument: $1"
            fi
            shift
            ;;
    esac
done

[ -n "$CMD" ] || usage_error "missing command"
case $CMD in
    start | stop | status | clean)
        [ -z "$NODE" ] || usage_error "$CMD takes no node number (got '$NODE')"
        ;;
    kill | restart)
        [ -n "$NODE" ] || usage_error "$CMD needs a node number, e.g. $PROG $CMD 1"
        case $NODE in
            *[!0-9]* | 0*) usage_error "$CMD: node must be a number from 1 (got '$NODE')" ;;
        esac
        ;;
    *) usage_error "unknown command: $CMD" ;;
esac
case $NODES_OPT in
    "" | 1 | 3 | 5) ;;
    *) usage_error "--nodes must be 1, 3 or 5 (got '$NODES_OPT')" ;;
esac
BASE_ENV=${TENURE_BASE_PORT:-}
case $BASE_ENV in
    "") ;;
    *[!0-9]*) usage_error "TENURE_BASE_PORT must be a number (got '$BASE_ENV')" ;;
    *)
        if [ "$BASE_ENV" -lt 1024 ] || [ "$BASE_ENV" -gt 65000 ]; then
            usage_error "TENURE_BASE_PORT must be between 1024 and 65000 (got $BASE_ENV)"
        fi
        ;;
esac

DIR=${DIR_OPT:-$ROOT/.cluster}
case $DIR in
    /*) ;;
    *) DIR=$(pwd)/$DIR ;;
esac
# One spelling of DIR for every invocation: the pid checks compare it with
# the --data argument of running daemons.
[ "$CMD" = start ] && mkdir -p "$DIR"
if [ -d "$DIR" ]; then
    DIR=$(cd "$DIR" && pwd -P)
fi
DIR=${DIR%/}
CONF=$DIR/cluster.conf

# The size and base port are fixed when the cluster is first started (Raft
# keeps the members' addresses in its data); later commands reuse them.
NODES=
BASE=
if [ -f "$CONF" ]; then
    NODES=$(sed -n 's/^NODES=\([0-9][0-9]*\)$/\1/p' "$CONF")
    BASE=$(sed -n 's/^BASE=\([0-9][0-9]*\)$/\1/p' "$CONF")
    if [ -z "$NODES" ] || [ -z "$BASE" ]; then
        die "$CONF is damaged (expected NODES= and BASE= lines)"
    fi
    if [ -n "$NODES_OPT" ] && [ "$NODES_OPT" != "$NODES" ]; then
        usage_error "$DIR holds a $NODES-node cluster; use --nodes $NODES, or '$PROG clean' first"
    fi
    if [ -n "$BASE_ENV" ] && [ "$BASE_ENV" != "$BASE" ]; then
        usage_error "$DIR holds a cluster on base port $BASE; unset TENURE_BASE_PORT, or '$PROG clean' first"
    fi
else
    NODES=${NODES_OPT:-3}
    BASE=${BASE_ENV:-7000}
fi
if [ -n "$NODE" ] && [ "$NODE" -gt "$NODES" ]; then
    usage_error "$CMD: no node $NODE in a $NODES-node cluster"
fi

# --------------------------------------------------------------- helpers
raft_port() { echo $((BASE + $1)); }
rpc_port() { echo $((BASE + 100 + $1)); }
http_port() { echo $((BASE + 200 + $1)); }
node_dir() { echo "$DIR/node$1"; }

all_nodes() {
    i=1
    while [ "$i" -le "$NODES" ]; do
        echo "$i"
        i=$((i + 1))
    done
}

initial_cluster() {
    list=
    for n in $(all_nodes); do
        list="$list${list:+,}$n=127.0.0.1:$(raft_port "$n")"
    done
    echo "$list"
}

rpc_endpoints() {
    list=
    for n in $(all_nodes); do
        list="$list${list:+,}127.0.0.1:$(rpc_port "$n")"
    done
    echo "$list"
}

# True when PID runs a tenured on node N's data dir: a pid file never makes
# us signal a process we did not start (or one whose pid was reused).
is_ours() {
    [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] || return 1
    args=$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    first=$(printf '%s\n' "$args" | head -n 1)
    [ "${first##*/}" = tenured ] || return 1
    printf '%s\n' "$args" | grep -qxF -- "$(node_dir "$2")/data"
}

# Prints node N's pid when it runs, nothing otherwise.
running_pid() {
    f=$(node_dir "$1")/tenured.pid
    [ -f "$f" ] || return 0
    p=$(cat "$f" 2>/dev/null || true)
    if is_ours "$p" "$1"; then
        echo "$p"
    fi
}

# Waits up to $2 seconds for pid $1 (node $3) to be gone.
wait_gone() {
    tries=$(($2 * 10))
    while is_ours "$1" "$3"; do
        [ "$tries" -gt 0 ] || return 1
        tries=$((tries - 1))
        sleep 0.1
    done
}

need_curl() {
    command -v curl >/dev/null 2>&1 && return 0
    echo "curl is missing: running deploy/setup.sh --no-build" >&2
    "$ROOT/deploy/setup.sh" --no-build
}

cluster_json() {
    curl -s --max-time 1 "http://127.0.0.1:$(http_port "$1")/v1/cluster" 2>/dev/null || true
}

# json_field KEY JSON: a top-level number or string value (good enough for
# the flat fields of /v1/cluster; empty when absent).
json_field() {
    printf '%s' "$2" | tr -d '\n' |
        sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\{0,1\}\([A-Za-z0-9_.:-]*\).*/\1/p"
}

# Prints the id of the leader: a node that some running node names as
# leader and that names itself too. Nothing when there is none (yet).
find_leader() {
    for n in $(all_nodes); do
        [ -n "$(running_pid "$n")" ] || continue
        l=$(json_field leader_id "$(cluster_json "$n")")
        case $l in
            "" | 0 | *[!0-9]*) continue ;;
        esac
        [ "$l" -le "$NODES" ] || continue
        [ -n "$(running_pid "$l")" ] || continue
        if [ "$(json_field leader_id "$(cluster_json "$l")")" = "$l" ]; then
            echo "$l"
            return 0
        fi
    done
    return 0
}

# True when every running node names leader $1 and knows its HTTP
# address: until then a follower answers 503 instead of forwarding.
all_know_leader() {
    for n in $(all_nodes); do
        [ -n "$(running_pid "$n")" ] || continue
        j=$(cluster_json "$n")
        [ "$(json_field leader_id "$j")" = "$1" ] || return 1
        case $(json_field leader_http "$j") in
            "" | null) return 1 ;;
        esac
    done
    return 0
}

show_log_tail() {
    log=$(node_dir "$1")/tenured.log
    echo "--- last lines of $log:" >&2
    tail -n 20 "$log" 2>/dev/null | sed 's/^/    /' >&2 || true
}

port_busy() {
    command -v ss >/dev/null 2>&1 || return 1
    [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

start_node() {
    d=$(node_dir "$1")
    mkdir -p "$d/data"
    printf '=== %s: %s starts node %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$PROG" "$1" >>"$d/tenured.log"
    nohup "$TENURED" --id "$1" --data "$d/data" \
        --raft "127.0.0.1:$(raft_port "$1")" \
        --rpc "127.0.0.1:$(rpc_port "$1")" \
        --http "127.0.0.1:$(http_port "$1")" \
        --initial-cluster "$(initial_cluster)" \
        --log-level "$LOG_LEVEL" $TENURED_ARGS \
        </dev/null >>"$d/tenured.log" 2>&1 &
    echo $! >"$d/tenured.pid"
}

ensure_built() {
    if [ ! -x "$TENURED" ]; then
        echo "$TENURED is not built: running deploy/setup.sh"
        TENURE_BUILD_DIR=$BIN_DIR "$ROOT/deploy/setup.sh"
        [ -x "$TENURED" ] || die "setup finished but $TENURED is still missing"
    fi
    need_curl
}

# True while process $1 exists and is not a zombie.
pid_alive() {
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$state" ] && [ "$state" != Z ]
}

# Fails when a node we just started has exited (and shows why). The pid
# file is trusted here: we wrote it a moment ago, and the process may not
# have exec'd tenured yet.
check_alive() {
    for n in "$@"; do
        if ! pid_alive "$(cat "$(node_dir "$n")/tenured.pid" 2>/dev/null)"; then
            echo "$PROG: node $n exited during start-up" >&2
            show_log_tail "$n"
            exit 1
        fi
    done
}

node_line() {
    n=$1
    p=$(running_pid "$n")
    role=
    [ "$n" = "${2:-}" ] && role=leader
    state=up
    if [ -z "$p" ]; then
        state=down
        p=-
    fi
    printf '  %-4s %-5s %-8s %-16s %-16s %s%s\n' "$n" "$state" "$p" \
        "127.0.0.1:$(raft_port "$n")" "127.0.0.1:$(rpc_port "$n")" \
        "127.0.0.1:$(http_port "$n")" "${role:+  $role}"
}

node_table() {
    printf '  %-4s %-5s %-8s %-16s %-16s %s\n' node state pid raft rpc http
    for n in $(all_nodes); do
        node_line "$n" "${1:-}"
    done
}

leader_summary() {
    l=$1
    j=$(cluster_json "$l")
    term=$(json_field term "$j")
    commit=$(json_field commit_index "$j")
    echo "leader: node $l (http 127.0.0.1:$(http_port "$l"), term ${term:-?}, commit index ${commit:-?})"
}

# -------------------------------------------------------------- commands
cmd_start() {
    ensure_built

    # Check every port first: start all the missing nodes or none.
    started=
    for n in $(all_nodes); do
        p=$(running_pid "$n")
        if [ -n "$p" ]; then
            echo "node $n is already running (pid $p)"
            continue
        fi
        for port in $(raft_port "$n") $(rpc_port "$n") $(http_port "$n"); do
            if port_busy "$port"; then
                die "port $port (node $n) is in use by another process; choose other ports with TENURE_BASE_PORT=... and --dir"
            fi
        done
        started="$started $n"
    done
    if [ -n "$started" ] && [ ! -f "$CONF" ]; then
        mkdir -p "$DIR"
        printf 'NODES=%s\nBASE=%s\n' "$NODES" "$BASE" >"$CONF"
    fi
    for n in $started; do
        start_node "$n"
    done
    if [ -z "$started" ]; then
        echo "cluster already running in $DIR"
    else
        echo "started node(s)$started of $NODES in $DIR; waiting for a leader (up to ${START_TIMEOUT}s)..."
    fi

    tries=$((START_TIMEOUT * 5))
    leader=
    while :; do
        # shellcheck disable=SC2086
        check_alive $started
        leader=$(find_leader)
        [ -n "$leader" ] && all_know_leader "$leader" && break
        if [ "$tries" -le 0 ]; then
            echo "$PROG: no leader known to every node after ${START_TIMEOUT}s" >&2
            node_table >&2
            for n in $(all_nodes); do
                show_log_tail "$n"
            done
            exit 1
        fi
        tries=$((tries - 1))
        sleep 0.2
    done

    http1=$(http_port 1)
    ctl=$BIN_DIR/tenurectl
    [ "$(pwd)" = "$ROOT" ] && ctl=${ctl#"$ROOT"/}
    echo
    echo "tenure: $NODES-node cluster up in $DIR"
    node_table "$leader"
    leader_summary "$leader"
    cat <<EOF

Try it (any node answers; followers forward to the leader):
  curl -i -X PUT localhost:$http1/v1/locks/demo -d '{"holder":"a","ttl_ms":10000}'
  curl -i -X PUT localhost:$http1/v1/locks/demo -d '{"holder":"b","ttl_ms":10000}'   # 409: held by a
  $ctl --endpoints $(rpc_endpoints) acquire demo
  curl -s localhost:$http1/v1/cluster

Logs: $DIR/node<i>/tenured.log
Then: $PROG status | kill N | restart N | stop
EOF
}

cmd_stop() {
    if [ ! -d "$DIR" ]; then
        echo "no cluster in $DIR"
        return 0
    fi
    pids=
    for n in $(all_nodes); do
        p=$(running_pid "$n")
        if [ -n "$p" ]; then
            kill -TERM "$p" 2>/dev/null || true
            pids="$pids $n:$p"
        else
            rm -f "$(node_dir "$n")/tenured.pid"
        fi
    done
    if [ -z "$pids" ]; then
        echo "no node running in $DIR"
        return 0
    fi
    deadline=$(($(date +%s) + STOP_TIMEOUT))
    for np in $pids; do
        n=${np%%:*}
        p=${np#*:}
        left=$((deadline - $(date +%s)))
        [ "$left" -gt 0 ] || left=0
        if wait_gone "$p" "$left" "$n"; then
            echo "node $n stopped (pid $p)"
        else
            kill -KILL "$p" 2>/dev/null || true
            wait_gone "$p" 5 "$n" || true
            echo "node $n did not stop within ${STOP_TIMEOUT}s of SIGTERM: killed (pid $p)"
        fi
        rm -f "$(node_dir "$n")/tenured.pid"
    done
}

cmd_status() {
    if [ ! -f "$CONF" ]; then
        echo "no cluster in $DIR (start one with: $PROG start)"
        return 1
    fi
    need_curl
    leader=$(find_leader)
    echo "tenure cluster in $DIR: $NODES nodes, base port $BASE"
    node_table "$leader"
    down=0
    for n in $(all_nodes); do
        [ -n "$(running_pid "$n")" ] || down=$((down + 1))
    done
    if [ -n "$leader" ]; then
        leader_summary "$leader"
    else
        echo "leader: none known"
    fi
    [ "$down" -eq 0 ]
}

cmd_kill() {
    [ -f "$CONF" ] || die "no cluster in $DIR"
    p=$(running_pid "$NODE")
    if [ -z "$p" ]; then
        echo "node $NODE is not running"
        return 0
    fi
    kill -KILL "$p" 2>/dev/null || true
    wait_gone "$p" 5 "$NODE" || die "node $NODE (pid $p) still there after kill -9"
    rm -f "$(node_dir "$NODE")/tenured.pid"
    echo "node $NODE killed (kill -9 $p)"
}

cmd_restart() {
    [ -f "$CONF" ] || die "no cluster in $DIR (start one with: $PROG start)"
    ensure_built
    cmd_kill
    start_node "$NODE"
    tries=$((START_TIMEOUT * 5))
    until curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$(http_port "$NODE")/healthz"; do
        check_alive "$NODE"
        [ "$tries" -gt 0 ] || die "node $NODE does not answer /healthz after ${START_TIMEOUT}s"
        tries=$((tries - 1))
        sleep 0.2
    done
    echo "node $NODE started (pid $(running_pid "$NODE"))"
    tries=50
    leader=$(find_leader)
    while [ -z "$leader" ] && [ "$tries" -gt 0 ]; do
        sleep 0.2
        tries=$((tries - 1))
        leader=$(find_leader)
    done
    if [ -n "$leader" ]; then
        leader_summary "$leader"
    else
        echo "leader: none known yet (see: $PROG status)"
    fi
}

cmd_clean() {
    if [ ! -f "$CONF" ]; then
        # Refuse to delete a directory that is not ours.
        [ -d "$DIR" ] || { echo "nothing to clean in $DIR"; return 0; }
        die "$DIR has no cluster.conf: not removing it"
    fi
    cmd_stop
    for n in $(all_nodes); do
        rm -rf "$(node_dir "$n")"
    done
    rm -f "$CONF"
    rmdir "$DIR" 2>/dev/null || true
    echo "removed the cluster in $DIR"
}

case $CMD in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    kill) cmd_kill ;;
    restart) cmd_restart ;;
    clean) cmd_clean ;;
esac
