/* tnbench: failover — rpc-cycle load on every client; kill -9 the leader;
 * time from the kill to the first successful acquire whose request was
 * sent after the kill; restart the node with deploy/local-cluster.sh; wait
 * until the cluster is whole and serving again; --repeat times.
 *
 * States: HEALTHY? (all pid files alive, a leader confirmed by itself, load
 * flowing for 2 s) → KILL → WAIT_ACQUIRE (≤ 30 s) → SETTLE (1 s) →
 * RESTART (script) → HEALTHY? ... Clients retry with the same
 * (client_id, seq) through NOT_LEADER / NO_QUORUM / lost connections. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

enum { FO_HEALTHY = 0, FO_WAIT_ACQ, FO_SETTLE, FO_RESTART, FO_DONE };

#define FO_MAX 100
#define FO_ACQ_TIMEOUT_NS (30ull * 1000000000ull)
#define FO_HEALTHY_TIMEOUT_NS (60ull * 1000000000ull)

static struct
{
    int state;
    int iter;
    int expect_nodes;
    uint64_t t_state;
    uint64_t ops_mark;
    uint64_t t_kill;
    unsigned killed_id;
    pid_t killed_pid;
    uint64_t confirmed_leader;
    uint64_t t_leader_seen; /* first reply naming a new leader after kill */
    double ms[FO_MAX];
    double leader_ms[FO_MAX];
    unsigned victim[FO_MAX];
    int n;
    uv_timer_t tick;
    uv_timer_t limit;
    uv_process_t proc;
    struct rconn pc;
    struct call pk;
} FO;

static void foState(int s)
{
    FO.state = s;
    FO.t_state = nowNs();
}

static void probeDone(struct call *k, int status, const Tn__Response *r)
{
    const Tn__ClusterInfo *ci;
    (void)k;
    if (status != TN__STATUS__OK || r->body_case != TN__RESPONSE__BODY_CLUSTER) {
        rconnRetarget(&FO.pc, B->rpc_eps[(FO.pc.ep + 1 + B->n_rpc) % B->n_rpc]);
        return;
    }
    ci = r->cluster;
    if ((FO.state == FO_WAIT_ACQ || FO.state == FO_SETTLE) &&
        FO.t_leader_seen == 0 && ci->leader_id != 0 &&
        ci->leader_id != FO.killed_id) {
        FO.t_leader_seen = nowNs(); /* some node names a new leader */
    }
    if (ci->leader_id != 0 && ci->node_id == ci->leader_id) {
        FO.confirmed_leader = ci->leader_id;
        return;
    }
    FO.confirmed_leader = 0;
    if (ci->leader_rpc != NULL && ci->leader_rpc[0] != '\0') {
        rconnRetarget(&FO.pc, ci->leader_rpc);
    } else {
        rconnRetarget(&FO.pc, B->rpc_eps[(FO.pc.ep + 1 + B->n_rpc) % B->n_rpc]);
    }
}

static bool nodesAlive(void)
{
    benchRefreshNodes();
    return B->n_nodes >= FO.expect_nodes;
}

static pid_t nodePid(unsigned id)
{
    for (int i = 0; i < B->n_nodes; i++) {
        if (B->nodes[i].id == id) {
            return B->nodes[i].pid;
        }
    }
    return 0;
}

static void restartExit(uv_process_t *p, int64_t status, int sig)
{
    (void)sig;
    uv_close((uv_handle_t *)p, NULL);
    if (status != 0) {
        fprintf(stderr, "tnbench: failover: restart of node %u exited %d\n",
                FO.killed_id, (int)status);
    }
    FO.iter++;
    if (FO.iter >= B->repeat) {
        foState(FO_DONE);
        benchRefreshNodes();
        benchStopMeasuring();
        return;
    }
    FO.ops_mark = B->ops_done;
    foState(FO_HEALTHY);
}

static void startRestart(void)
{
    char id[16];
    char *args[7];
    uv_process_options_t o;
    uv_stdio_container_t io[3];
    int rv;
    if (FO.n > 0) {
        FO.leader_ms[FO.n - 1] =
            FO.t_leader_seen ? (double)(FO.t_leader_seen - FO.t_kill) / 1e6 : -1;
    }
    snprintf(id, sizeof id, "%u", FO.killed_id);
    args[0] = "sh";
    args[1] = (char *)B->cluster_script;
    args[2] = "restart";
    args[3] = id;
    args[4] = "--dir";
    args[5] = (char *)B->cluster_dir;
    args[6] = NULL;
    memset(&o, 0, sizeof o);
    memset(io, 0, sizeof io);
    io[0].flags = UV_IGNORE;
    io[1].flags = UV_IGNORE;
    io[2].flags = UV_INHERIT_FD;
    io[2].data.fd = 2;
    o.file = "sh";
    o.args = args;
    o.exit_cb = restartExit;
    o.stdio = io;
    o.stdio_count = 3;
    foState(FO_RESTART);
    rv = uv_spawn(B->loop, &FO.proc, &o);
    if (rv != 0) {
        fprintf(stderr, "tnbench: failover: cannot run %s: %s\n",
                B->cluster_script, uv_strerror(rv));
        foState(FO_DONE);
        benchStopMeasuring();
    }
}

static void doKill(void)
{
    pid_t pid = nodePid((unsigned)FO.confirmed_leader);
    if (pid <= 0 || !procIsTenured(pid)) {
        return; /* not yet: try again on the next tick */
    }
    FO.killed_id = (unsigned)FO.confirmed_leader;
    FO.killed_pid = pid;
    FO.confirmed_leader = 0;
    FO.t_leader_seen = 0;
    foState(FO_WAIT_ACQ);
    FO.t_kill = nowNs();
    if (kill(pid, SIGKILL) != 0) {
        perror("tnbench: kill");
        foState(FO_DONE);
        benchStopMeasuring();
        return;
    }
    if (!B->quiet) {
        fprintf(stderr, "tnbench: failover %d/%d: kill -9 node %u (pid %d)\n",
                FO.iter + 1, B->repeat, FO.killed_id, (int)pid);
    }
}

static void record(double ms)
{
    if (FO.n < FO_MAX) {
        FO.victim[FO.n] = FO.killed_id;
        FO.ms[FO.n++] = ms;
    }
    if (!B->quiet) {
        fprintf(stderr, "tnbench: failover %d/%d: first acquire after %.0f ms\n",
                FO.iter + 1, B->repeat, ms);
    }
}

static void onAcquire(const struct call *k, uint64_t now)
{
    if (FO.state == FO_WAIT_ACQ && k->t_sent >= FO.t_kill) {
        record((double)(now - FO.t_kill) / 1e6);
        foState(FO_SETTLE);
    }
}

static void tickCb(uv_timer_t *t)
{
    uint64_t now = nowNs();
    (void)t;
    if (!FO.pk.busy && FO.state != FO_DONE) {
        callClusterStatus(&FO.pk);
        callStart(&FO.pk, 200);
    }
    switch (FO.state) {
    case FO_HEALTHY:
        if (FO.confirmed_leader != 0 && now - FO.t_state > 2000000000ull &&
            B->ops_done - FO.ops_mark >= 100 && nodesAlive()) {
            doKill();
        } else if (now - FO.t_state > FO_HEALTHY_TIMEOUT_NS) {
            fprintf(stderr, "tnbench: failover: cluster not healthy after "
                            "60 s; stopping\n");
            foState(FO_DONE);
            benchStopMeasuring();
        }
        break;
    case FO_WAIT_ACQ:
        if (now - FO.t_kill > FO_ACQ_TIMEOUT_NS) {
            fprintf(stderr, "tnbench: failover: no acquire within 30 s\n");
            record(-1);
            foState(FO_SETTLE);
        }
        break;
    case FO_SETTLE:
        if (now - FO.t_state > 1000000000ull) {
            startRestart();
        }
        break;
    default:
        break;
    }
}

static void limitCb(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "tnbench: failover: over its time limit; stopping\n");
    foState(FO_DONE);
    benchStopMeasuring();
}

static int cmpDouble(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void foReport(void)
{
    double sorted[FO_MAX];
    int ok = 0;
    uv_timer_stop(&FO.tick);
    benchExtra("failover   kill -9 of the leader -> first successful acquire "
               "(request sent after the kill):\n");
    for (int i = 0; i < FO.n; i++) {
        benchExtra("           #%d node %u: %.0f ms (a node named the new "
                   "leader after %.0f ms; probed every 20 ms)\n",
                   i + 1, FO.victim[i], FO.ms[i], FO.leader_ms[i]);
        if (FO.ms[i] >= 0) {
            sorted[ok++] = FO.ms[i];
        }
    }
    if (ok > 0) {
        qsort(sorted, (size_t)ok, sizeof sorted[0], cmpDouble);
        benchExtra("           median %.0f ms, min %.0f, max %.0f over %d "
                   "kills (%d without an acquire in 30 s)\n",
                   ok % 2 ? sorted[ok / 2]
                          : (sorted[ok / 2 - 1] + sorted[ok / 2]) / 2,
                   sorted[0], sorted[ok - 1], FO.n, FO.n - ok);
    }
    benchExtra("           leases cut short: %" PRIu64
               " sessions lost, %" PRIu64 " LEASE_EXPIRED\n",
               B->sessions_lost, B->errors[errIndex(TN__STATUS__LEASE_EXPIRED)]);
}

int wlFailover(void)
{
    struct cycle_cfg c = {
        .prefix = "f",
        .timeout_ms = 30000,
        .slot_cycle = 0,
        .slot_acq = 1,
        .slot_rel = 2,
        .on_acquire = onAcquire,
    };
    FO.expect_nodes = B->n_nodes;
    if (FO.expect_nodes < 3) {
        fprintf(stderr, "tnbench: failover: found %d running nodes in %s; "
                        "needs a cluster of at least 3\n",
                FO.expect_nodes, B->cluster_dir);
        return 2;
    }
    B->op_names[0] = "cycle";
    B->op_names[1] = "acquire";
    B->op_names[2] = "release";
    B->before_report = foReport;
    /* Retry often: the backoff must not hide when service came back. */
    B->retry_cap_ms = 10;
    rconnInit(&FO.pc, B->target_rpc, 4);
    callInit(&FO.pk, &FO.pc, probeDone, NULL);
    uv_timer_init(B->loop, &FO.tick);
    uv_timer_start(&FO.tick, tickCb, 20, 20);
    cycleStartClients(&c);
    B->t0 = nowNs();
    benchStartMeasuring();
    /* Bounded: a round takes at most 60 + 30 + 1 + 30 (restart) s. */
    uv_timer_init(B->loop, &FO.limit);
    uv_timer_start(&FO.limit, limitCb, 150000ull * (uint64_t)B->repeat, 0);
    foState(FO_HEALTHY);
    return 0;
}
