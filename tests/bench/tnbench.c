/* tnbench: load generator for tenure (RPC and HTTP), one process, one libuv
 * loop, up to thousands of clients. Prints throughput, latency percentiles,
 * errors, client and server CPU/RSS, and on every run a safety check of the
 * grants it saw (no two holders at once, tokens strictly increasing).
 *
 * Usage: tnbench --help; tests/bench/run.sh starts a cluster around it. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static struct bench bench;
struct bench *B = &bench;
/* Static so that what the loop allocates stays reachable until exit: the
 * process ends with handles still open rather than closing thousands. */
static uv_loop_t loop;

static const char usage[] =
    "usage: tnbench --workload W [options]\n"
    "\n"
    "workloads:\n"
    "  http-cycle  per client: PUT /v1/locks/{id} (one-lock session) -> 201 +\n"
    "              ETag, then DELETE with If-Match -> 204; own resource\n"
    "  rpc-cycle   per client: one session (kept alive), then acquire +\n"
    "              release on its own resource, client_id/seq on mutations\n"
    "  contend     every client on ONE resource, acquire with --wait-ms in\n"
    "              the server's queue, release on grant: hand-offs/s, wait\n"
    "  failover    rpc-cycle load; kill -9 the leader, time to the first\n"
    "              successful acquire; --repeat times (needs --cluster-dir)\n"
    "  fill        --sessions sessions hold --locks locks, kept alive for\n"
    "              --duration s: server RSS per held lock, keepalive CPU\n"
    "\n"
    "options:\n"
    "  --rpc A,B,C         RPC endpoints (alias --endpoints)\n"
    "  --http A,B,C        HTTP endpoints (http-cycle)\n"
    "  --clients N         concurrent clients (1, 16, 64, 256, ...; default 16)\n"
    "  --conns N           rpc-cycle, contend: the clients share N connections\n"
    "                      (round robin; default: one each), as the threads of\n"
    "                      a process share one libtenure client\n"
    "  --requeue-early     rpc-cycle, contend: send the next acquire right\n"
    "                      behind the release (same write), not after its\n"
    "                      answer\n"
    "  --duration S        measured seconds (default 10)\n"
    "  --warmup S          seconds before measuring (default 1)\n"
    "  --max-ops N         stop after N operations (cycles / hand-offs)\n"
    "  --ttl-ms MS         session / lease TTL (default 10000)\n"
    "  --wait-ms MS        contend: server-side wait (default 5000)\n"
    "  --hold-ms MS        contend: hold time before release (default 0)\n"
    "  --locks N           fill: locks to hold (default 100000)\n"
    "  --sessions M        fill: sessions holding them (default locks/100)\n"
    "  --window W          fill: requests in flight per connection (32)\n"
    "  --repeat N          failover: kills (default 5)\n"
    "  --cluster-dir D     cluster directory of deploy/local-cluster.sh (pid\n"
    "                      files; failover also restarts nodes with the script)\n"
    "  --cluster-script P  default: deploy/local-cluster.sh of the source tree\n"
    "  --pids P1,P2,..     tenured pids for CPU/RSS (or ID:PID,...)\n"
    "  --spread            clients spread over every endpoint (followers\n"
    "                      forward) instead of all on the leader\n"
    "  --quiet             only the table\n"
    "  --self-test         check the safety checker on planted violations\n";

/* ------------------------------------------------------------- helpers */

uint64_t nowNs(void)
{
    return uv_hrtime();
}

uint64_t safeUntil(uint64_t t_send, uint32_t ttl_ms)
{
    /* t_send + ttl × (1 − ρ) − ε, ρ = 1 %, ε = 100 ms (DESIGN §4.5). */
    double ms = (double)ttl_ms * 0.99 - 100.0;
    if (ms <= 0) {
        return t_send;
    }
    return t_send + (uint64_t)(ms * 1e6);
}

void benchExtra(const char *fmt, ...)
{
    va_list ap;
    int n;
    size_t room = sizeof B->extra - B->extra_len;
    if (room <= 1) {
        return;
    }
    va_start(ap, fmt);
    n = vsnprintf(B->extra + B->extra_len, room, fmt, ap);
    va_end(ap);
    if (n > 0) {
        B->extra_len += (size_t)n < room ? (size_t)n : room - 1;
    }
}

void benchError(int status)
{
    B->errors[errIndex(status)]++;
}

void benchHttpError(int status)
{
    if (status >= 100 && status < 600) {
        B->http_status[status]++;
    } else {
        B->errors[errIndex(status)]++;
    }
}

void benchSampleProcs(bool end)
{
    for (int i = 0; i < B->n_nodes; i++) {
        struct node_proc *n = &B->nodes[i];
        procSample(n->pid, end ? &n->b : &n->a);
    }
    procSample(0, end ? &B->self_b : &B->self_a);
}

void benchStartMeasuring(void)
{
    if (B->measuring || B->stopping) {
        return;
    }
    B->measuring = true;
    B->t_measure = nowNs();
    benchSampleProcs(false);
}

static void hardStopCb(uv_timer_t *t)
{
    if (B->stopping < 2) {
        fprintf(stderr, "tnbench: clients still busy 15 s after the end; "
                        "giving up on them\n");
        B->stopping = 2;
        uv_timer_start(t, hardStopCb, 5000, 0);
        return;
    }
    uv_stop(B->loop);
}

void benchStopMeasuring(void)
{
    if (B->stopping) {
        return;
    }
    if (!B->measuring) {
        /* Ended during the warm-up (a small --max-ops): measure it all. */
        B->measuring = true;
        B->t_measure = B->t0;
        benchSampleProcs(false);
    }
    B->t_stop = nowNs();
    benchSampleProcs(true);
    B->measuring = false;
    B->stopping = 1;
    uv_timer_stop(&B->stop_timer);
    uv_timer_start(&B->hard_timer, hardStopCb, 15000, 0);
    if (B->on_stop != NULL) {
        B->on_stop();
    }
}

void benchOp(int op, uint64_t t_start, uint64_t t_end)
{
    if (op < 0) {
        return;
    }
    if (op == 0) {
        B->ops_done++;
    }
    if (B->measuring) {
        histRecord(&B->h[op], t_end - t_start);
    }
    if (op == 0 && B->max_ops != 0 && B->ops_done >= B->max_ops) {
        benchStopMeasuring();
    }
}

void benchClientDone(void)
{
    B->clients_done++;
    if (B->clients_done >= B->clients) {
        uv_stop(B->loop);
    }
}

/* ------------------------------------------------------- leader discovery */

static struct
{
    struct rconn c;
    struct call k;
    bool inited;
    bool done;
    bool found;
} disc;

static void discDone(struct call *k, int status, const Tn__Response *r)
{
    (void)k;
    disc.done = true;
    if (status != TN__STATUS__OK || r == NULL ||
        r->body_case != TN__RESPONSE__BODY_CLUSTER ||
        r->cluster->leader_rpc == NULL || r->cluster->leader_rpc[0] == '\0') {
        return;
    }
    snprintf(B->target_rpc, sizeof B->target_rpc, "%s",
             r->cluster->leader_rpc);
    snprintf(B->target_http, sizeof B->target_http, "%s",
             r->cluster->leader_http ? r->cluster->leader_http : "");
    B->leader_id = r->cluster->leader_id;
    disc.found = true;
}

/* Asks the endpoints in turn for the leader (blocking: runs the loop). */
int benchFindLeader(uint32_t timeout_ms)
{
    uint64_t deadline = nowNs() + (uint64_t)timeout_ms * 1000000u;
    if (B->n_rpc == 0) {
        return -1;
    }
    if (!disc.inited) {
        rconnInit(&disc.c, B->rpc_eps[0], 4);
        callInit(&disc.k, &disc.c, discDone, NULL);
        disc.inited = true;
    }
    while (nowNs() < deadline) {
        disc.done = false;
        disc.found = false;
        callClusterStatus(&disc.k);
        callStart(&disc.k, 1000);
        while (!disc.done) {
            uv_run(B->loop, UV_RUN_ONCE);
        }
        if (disc.found) {
            return 0;
        }
        usleep(100 * 1000);
        rconnRetarget(&disc.c,
                      B->rpc_eps[(disc.c.ep + 1 + B->n_rpc) % B->n_rpc]);
    }
    return -1;
}

/* ---------------------------------------------------------------- nodes */

static void addNode(unsigned id, pid_t pid)
{
    if (B->n_nodes < BENCH_MAX_NODES) {
        struct node_proc *n = &B->nodes[B->n_nodes++];
        memset(n, 0, sizeof *n);
        n->id = id;
        n->pid = pid;
    }
}

static void nodesFromDir(const char *dir)
{
    for (unsigned id = 1; id <= BENCH_MAX_NODES; id++) {
        char path[1024];
        FILE *f;
        int pid = 0;
        snprintf(path, sizeof path, "%s/node%u/tenured.pid", dir, id);
        f = fopen(path, "r");
        if (f == NULL) {
            continue;
        }
        if (fscanf(f, "%d", &pid) == 1 && procIsTenured(pid)) {
            addNode(id, pid);
        }
        fclose(f);
    }
}

static void nodesFromList(const char *list)
{
    char buf[512];
    char *save = NULL;
    unsigned n = 0;
    snprintf(buf, sizeof buf, "%s", list);
    for (char *it = strtok_r(buf, ",", &save); it != NULL;
         it = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(it, ':');
        n++;
        if (colon != NULL) {
            *colon = '\0';
            addNode((unsigned)atoi(it), atoi(colon + 1));
        } else {
            addNode(n, atoi(it));
        }
    }
}

/* Re-reads the pid files (failover restarts nodes). */
void benchRefreshNodes(void)
{
    struct node_proc old[BENCH_MAX_NODES];
    int n_old = B->n_nodes;
    if (B->cluster_dir == NULL) {
        return;
    }
    memcpy(old, B->nodes, sizeof old);
    B->n_nodes = 0;
    nodesFromDir(B->cluster_dir);
    /* Keep the samples of processes that are still the same. */
    for (int i = 0; i < B->n_nodes; i++) {
        for (int j = 0; j < n_old; j++) {
            if (old[j].pid == B->nodes[i].pid) {
                B->nodes[i] = old[j];
            }
        }
    }
}

/* ----------------------------------------------------------------- report */

static void fmtMs(char *out, size_t n, uint64_t ns)
{
    double ms = (double)ns / 1e6;
    if (ms < 10) {
        snprintf(out, n, "%.2f", ms);
    } else if (ms < 1000) {
        snprintf(out, n, "%.1f", ms);
    } else {
        snprintf(out, n, "%.0f", ms);
    }
}

/* CPU time per measured op, by process: less sensitive than the rate to
 * whatever else runs on the machine. */
static void costLine(void)
{
    long hz = sysconf(_SC_CLK_TCK);
    uint64_t n = B->h[0].count;
    double all = 0;
    double c;
    long cores;
    if (n == 0 || hz <= 0 || !B->self_a.ok || !B->self_b.ok ||
        B->wl == WL_FAILOVER) {
        return;
    }
    c = (double)(B->self_b.cpu_ticks - B->self_a.cpu_ticks) / (double)hz;
    all += c;
    printf("cpu/op     %s: tnbench %.1f us", B->op_names[0],
           c * 1e6 / (double)n);
    for (int i = 0; i < B->n_nodes; i++) {
        const struct node_proc *p = &B->nodes[i];
        if (!p->a.ok || !p->b.ok) {
            continue;
        }
        c = (double)(p->b.cpu_ticks - p->a.cpu_ticks) / (double)hz;
        all += c;
        printf(", node%u %.1f", p->id, c * 1e6 / (double)n);
    }
    cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("; all %.1f us (%.0f/s would fill %ld cores)\n",
           all * 1e6 / (double)n,
           all > 0 ? (double)n / all * (double)cores : 0, cores);
}

static void report(void)
{
    double secs = B->t_stop > B->t_measure
                      ? (double)(B->t_stop - B->t_measure) / 1e9
                      : 0;
    uint64_t errs = 0;
    uint64_t retries = 0;
    int gone = 0;
    struct safety sf;
    double self_cpu;

    if (B->before_report != NULL) {
        B->before_report();
    }
    self_cpu = procCpuPercent(&B->self_a, &B->self_b);

    printf("\n== tnbench %s: %d clients", B->wl_name, B->clients);
    if (B->conns > 0 && B->conns < B->clients &&
        (B->wl == WL_RPC_CYCLE || B->wl == WL_CONTEND)) {
        printf(" on %d connections", B->conns);
    }
    printf(", %.1f s measured", secs);
    if (B->target_rpc[0] || B->target_http[0]) {
        printf(", target %s", B->wl == WL_HTTP_CYCLE ? B->target_http
                                                       : B->target_rpc);
        if (B->leader_id != 0) {
            printf(" (%s node %" PRIu64 ")", B->forward ? "leader is" : "leader",
                   B->leader_id);
        }
    }
    printf("\n");
    printf("%-10s %10s %10s %8s %8s %8s %8s %8s\n", "op", "count", "rate/s",
           "p50 ms", "p99 ms", "p999 ms", "max ms", "mean ms");
    for (int i = 0; i < 4; i++) {
        const struct hist *h = &B->h[i];
        char p50[16], p99[16], p999[16], mx[16], mean[16];
        if (B->op_names[i] == NULL) {
            continue;
        }
        fmtMs(p50, sizeof p50, histPercentile(h, 0.50));
        fmtMs(p99, sizeof p99, histPercentile(h, 0.99));
        fmtMs(p999, sizeof p999, histPercentile(h, 0.999));
        fmtMs(mx, sizeof mx, h->max);
        fmtMs(mean, sizeof mean, h->count ? h->sum / h->count : 0);
        {
            double s = B->op_secs[i] > 0 ? B->op_secs[i] : secs;
            printf("%-10s %10" PRIu64 " %10.0f %8s %8s %8s %8s %8s\n",
                   B->op_names[i], h->count, s > 0 ? (double)h->count / s : 0,
                   p50, p99, p999, mx, mean);
        }
    }

    for (int i = 1; i < ERR_KINDS; i++) {
        errs += B->errors[i];
    }
    for (int i = 0; i < 600; i++) {
        errs += B->http_status[i];
    }
    for (int i = 0; i < ERR_KINDS; i++) {
        retries += B->retries[i];
    }
    printf("errors     %" PRIu64, errs);
    if (errs != 0) {
        const char *sep = " (";
        for (int i = 1; i < ERR_KINDS; i++) {
            if (B->errors[i] != 0) {
                int st = i < 32 ? i : 32 - i;
                printf("%s%s %" PRIu64, sep, statusName(st), B->errors[i]);
                sep = ", ";
            }
        }
        for (int i = 0; i < 600; i++) {
            if (B->http_status[i] != 0) {
                printf("%sHTTP %d %" PRIu64, sep, i, B->http_status[i]);
                sep = ", ";
            }
        }
        printf(")");
    }
    printf("; retries %" PRIu64, retries);
    if (retries != 0) {
        const char *sep = " (";
        for (int i = 0; i < ERR_KINDS; i++) {
            if (B->retries[i] != 0) {
                int st = i < 32 ? i : 32 - i;
                printf("%s%s %" PRIu64, sep, statusName(st), B->retries[i]);
                sep = ", ";
            }
        }
        printf(")");
    }
    printf("; sessions lost %" PRIu64 "\n", B->sessions_lost);

    printf("%-16s %8s %10s %10s\n", "process", "cpu %", "rss MiB",
           "peak MiB");
    printf("%-16s %8.1f %10.1f %10.1f\n", "tnbench", self_cpu,
           (double)B->self_b.rss_kb / 1024.0,
           (double)B->self_b.hwm_kb / 1024.0);
    for (int i = 0; i < B->n_nodes; i++) {
        const struct node_proc *n = &B->nodes[i];
        char name[32];
        snprintf(name, sizeof name, "node%u%s", n->id,
                 n->id == B->leader_id ? " (leader)" : "");
        if (!n->b.ok || !procIsTenured(n->pid)) {
            printf("%-16s %8s %10s %10s  (pid %d gone)\n", name, "-", "-", "-",
                   (int)n->pid);
            gone++;
            continue;
        }
        {
            double cpu = procCpuPercent(&n->a, &n->b);
            char cpus[16];
            snprintf(cpus, sizeof cpus, cpu < 0 ? "-" : "%.1f", cpu);
            printf("%-16s %8s %10.1f %10.1f\n", name, cpus,
                   (double)n->b.rss_kb / 1024.0, (double)n->b.hwm_kb / 1024.0);
        }
    }
    costLine();
    if (B->extra_len > 0) {
        fputs(B->extra, stdout);
    }

    grantsCheck(&B->grants, &sf, 10);
    printf("safety     %" PRIu64 " grants on %" PRIu64
           " resources: %" PRIu64 " overlapping holds, %" PRIu64
           " non-increasing tokens, %" PRIu64 " duplicate tokens%s -> %s\n",
           sf.checked, sf.resources, sf.overlaps, sf.token_order,
           sf.duplicate_token,
           B->grants.dropped ? " (log full: some grants not recorded)" : "",
           sf.overlaps + sf.token_order + sf.duplicate_token == 0
               ? "OK (0 violations)"
               : "VIOLATIONS");
    printf("result     workload=%s clients=%d conns=%d rate=%.0f p50_ms=%.3f "
           "p99_ms=%.3f p999_ms=%.3f errors=%" PRIu64 " violations=%" PRIu64
           "\n",
           B->wl_name, B->clients,
           B->conns > 0 && B->conns < B->clients ? B->conns : B->clients,
           secs > 0 ? (double)B->h[0].count / secs : 0,
           (double)histPercentile(&B->h[0], 0.5) / 1e6,
           (double)histPercentile(&B->h[0], 0.99) / 1e6,
           (double)histPercentile(&B->h[0], 0.999) / 1e6, errs,
           sf.overlaps + sf.token_order + sf.duplicate_token);
    fflush(stdout);
    if (sf.overlaps + sf.token_order + sf.duplicate_token != 0) {
        exit(1);
    }
    if (gone != 0 && B->wl != WL_FAILOVER) {
        fprintf(stderr, "tnbench: %d tenured process(es) exited during the "
                        "run\n", gone);
        exit(3);
    }
}

/* ------------------------------------------------------------------ main */

static int splitList(const char *s, char out[][BENCH_ADDR_MAX], int max)
{
    char buf[1024];
    char *save = NULL;
    int n = 0;
    snprintf(buf, sizeof buf, "%s", s);
    for (char *it = strtok_r(buf, ",", &save); it != NULL && n < max;
         it = strtok_r(NULL, ",", &save)) {
        snprintf(out[n++], BENCH_ADDR_MAX, "%s", it);
    }
    return n;
}

static double numArg(const char *flag, const char *s, double min, double max)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "tnbench: %s: expected a number in [%g, %g], got '%s'\n",
                flag, min, max, s);
        exit(2);
    }
    return v;
}

static void stopTimerCb(uv_timer_t *t)
{
    (void)t;
    benchStopMeasuring();
}

static void warmupTimerCb(uv_timer_t *t)
{
    (void)t;
    benchStartMeasuring();
    uv_timer_start(&B->stop_timer, stopTimerCb,
                   (uint64_t)(B->duration_s * 1000), 0);
}

/* Starts the clock of a timed workload: warm-up, then --duration. */
void benchStartClock(void)
{
    B->t0 = nowNs();
    if (B->warmup_s > 0) {
        uv_timer_start(&B->stop_timer, warmupTimerCb,
                       (uint64_t)(B->warmup_s * 1000), 0);
    } else {
        warmupTimerCb(&B->stop_timer);
    }
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        { "workload", required_argument, NULL, 'w' },
        { "rpc", required_argument, NULL, 'r' },
        { "endpoints", required_argument, NULL, 'r' },
        { "http", required_argument, NULL, 'h' },
        { "clients", required_argument, NULL, 'c' },
        { "conns", required_argument, NULL, 'C' },
        { "requeue-early", no_argument, NULL, 'E' },
        { "duration", required_argument, NULL, 'd' },
        { "warmup", required_argument, NULL, 'W' },
        { "max-ops", required_argument, NULL, 'n' },
        { "ttl-ms", required_argument, NULL, 't' },
        { "wait-ms", required_argument, NULL, 'a' },
        { "hold-ms", required_argument, NULL, 'o' },
        { "locks", required_argument, NULL, 'L' },
        { "sessions", required_argument, NULL, 'S' },
        { "window", required_argument, NULL, 'x' },
        { "repeat", required_argument, NULL, 'R' },
        { "cluster-dir", required_argument, NULL, 'D' },
        { "cluster-script", required_argument, NULL, 's' },
        { "pids", required_argument, NULL, 'p' },
        { "spread", no_argument, NULL, 'f' },
        { "quiet", no_argument, NULL, 'q' },
        { "self-test", no_argument, NULL, 'T' },
        { "help", no_argument, NULL, '?' },
        { NULL, 0, NULL, 0 },
    };
    const char *wl = NULL;
    const char *pids = NULL;
    int opt;
    int rv;

    B->clients = 16;
    B->duration_s = 10;
    B->warmup_s = 1;
    B->ttl_ms = 10000;
    B->wait_ms = 5000;
    B->locks = 100000;
    B->window = 32;
    B->repeat = 5;
    B->retry_cap_ms = 200;
    B->grants.limit = 50u * 1000 * 1000;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'w':
            wl = optarg;
            break;
        case 'r':
            B->n_rpc = splitList(optarg, B->rpc_eps, BENCH_MAX_EPS);
            break;
        case 'h':
            B->n_http = splitList(optarg, B->http_eps, BENCH_MAX_EPS);
            break;
        case 'c':
            B->clients = (int)numArg("--clients", optarg, 1, 20000);
            break;
        case 'E':
            B->requeue_early = true;
            break;
        case 'C':
            B->conns = (int)numArg("--conns", optarg, 1, 20000);
            break;
        case 'd':
            B->duration_s = numArg("--duration", optarg, 0.1, 3600);
            break;
        case 'W':
            B->warmup_s = numArg("--warmup", optarg, 0, 600);
            break;
        case 'n':
            B->max_ops = (uint64_t)numArg("--max-ops", optarg, 1, 1e12);
            break;
        case 't':
            B->ttl_ms = (uint32_t)numArg("--ttl-ms", optarg, 100, 86400000);
            break;
        case 'a':
            B->wait_ms = (uint32_t)numArg("--wait-ms", optarg, 0, 600000);
            break;
        case 'o':
            B->hold_ms = (uint32_t)numArg("--hold-ms", optarg, 0, 600000);
            break;
        case 'L':
            B->locks = (uint64_t)numArg("--locks", optarg, 1, 1e8);
            break;
        case 'S':
            B->sessions = (uint64_t)numArg("--sessions", optarg, 1, 1e7);
            break;
        case 'x':
            B->window = (uint32_t)numArg("--window", optarg, 1, 4096);
            break;
        case 'R':
            B->repeat = (int)numArg("--repeat", optarg, 1, 100);
            break;
        case 'D':
            B->cluster_dir = optarg;
            break;
        case 's':
            B->cluster_script = optarg;
            break;
        case 'p':
            pids = optarg;
            break;
        case 'f':
            B->forward = true;
            break;
        case 'q':
            B->quiet = true;
            break;
        case 'T':
            return grantsSelfTest();
        default:
            fputs(usage, opt == '?' && optopt == 0 ? stdout : stderr);
            return opt == '?' && optopt == 0 ? 0 : 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tnbench: unexpected argument '%s'\n%s", argv[optind],
                usage);
        return 2;
    }
    if (wl == NULL) {
        fprintf(stderr, "tnbench: --workload is required\n%s", usage);
        return 2;
    }
    if (strcmp(wl, "http-cycle") == 0) {
        B->wl = WL_HTTP_CYCLE;
    } else if (strcmp(wl, "rpc-cycle") == 0) {
        B->wl = WL_RPC_CYCLE;
    } else if (strcmp(wl, "contend") == 0) {
        B->wl = WL_CONTEND;
    } else if (strcmp(wl, "failover") == 0) {
        B->wl = WL_FAILOVER;
    } else if (strcmp(wl, "fill") == 0) {
        B->wl = WL_FILL;
    } else {
        fprintf(stderr, "tnbench: unknown workload '%s'\n%s", wl, usage);
        return 2;
    }
    B->wl_name = wl;
    if (B->cluster_script == NULL) {
        B->cluster_script = TN_SOURCE_DIR "/deploy/local-cluster.sh";
    }
    if (B->sessions == 0) {
        B->sessions = B->locks / 100 ? B->locks / 100 : 1;
    }
    if (B->wl != WL_HTTP_CYCLE && B->n_rpc == 0) {
        fprintf(stderr, "tnbench: %s needs --rpc endpoints\n", wl);
        return 2;
    }
    if (B->wl == WL_HTTP_CYCLE && B->n_http == 0) {
        fprintf(stderr, "tnbench: http-cycle needs --http endpoints\n");
        return 2;
    }
    if (B->wl == WL_FAILOVER && B->cluster_dir == NULL) {
        fprintf(stderr, "tnbench: failover needs --cluster-dir (pid files "
                        "and deploy/local-cluster.sh restart)\n");
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)(nowNs() ^ (uint64_t)getpid()));
    snprintf(B->run_id, sizeof B->run_id, "%08x", (unsigned)rand());
    uv_loop_init(&loop);
    B->loop = &loop;
    uv_timer_init(&loop, &B->stop_timer);
    uv_timer_init(&loop, &B->hard_timer);

    if (B->n_rpc > 0 && benchFindLeader(15000) != 0) {
        fprintf(stderr, "tnbench: no leader known by %s within 15 s\n",
                B->rpc_eps[0]);
        return 1;
    }
    if (B->n_http > 0 && (B->target_http[0] == '\0' || B->forward)) {
        snprintf(B->target_http, sizeof B->target_http, "%s", B->http_eps[0]);
    }
    if (B->cluster_dir != NULL) {
        nodesFromDir(B->cluster_dir);
    }
    if (pids != NULL) {
        B->n_nodes = 0;
        nodesFromList(pids);
    }
    if (!B->quiet) {
        fprintf(stderr,
                "tnbench: %s, %d clients, run %s; leader %s%s%s; %d tenured "
                "pids\n",
                wl, B->clients, B->run_id,
                B->target_rpc[0] ? B->target_rpc : "?",
                B->target_http[0] ? " http " : "", B->target_http, B->n_nodes);
    }

    switch (B->wl) {
    case WL_HTTP_CYCLE:
        rv = wlHttpCycle();
        break;
    case WL_RPC_CYCLE:
        rv = wlRpcCycle();
        break;
    case WL_CONTEND:
        rv = wlContend();
        break;
    case WL_FAILOVER:
        rv = wlFailover();
        break;
    case WL_FILL:
        rv = wlFill();
        break;
    default:
        rv = 2;
        break;
    }
    if (rv != 0) {
        return rv;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (B->t_stop == 0) {
        benchStopMeasuring();
    }
    report();
    if (B->aborted) {
        return 1;
    }
    return B->h[0].count > 0 || B->wl == WL_FILL ? 0 : 1;
}
