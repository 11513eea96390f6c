/* tenure-fault: the fault harness (see fault.h and docs/reliability.md).
 *
 *   tenure-fault [--seed N] [--nodes 3|5] [--long] [--faults N]
 *                [--duration S] [--only KIND,...] [--ttl MS]
 *                [--recovery-bound MS] [--bin DIR] [--keep] ...
 *   tenure-fault --sweep
 *   tenure-fault --self-test
 *   tenure-fault worker ...     (started by the coordinator)
 *
 * Exit status: 0 when the history checked clean and nothing failed, 1 when
 * a violation or a failing finding was seen, 2 when the harness could not
 * run. */
#include "coord.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tenure.h"

volatile int g_abort;
static struct env *g_env;

tn_client *probeClient(void);

static void onAbort(int sig)
{
    (void)sig;
    g_abort = 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: tenure-fault [--seed N] [--nodes 3|5] [--long] "
            "[--faults N] [--duration S]\n"
            "                    [--only KIND,...] [--ttl MS] "
            "[--recovery-bound MS] [--bin DIR]\n"
            "                    [--lib-workers N] [--http-workers N] "
            "[--actors N] [--hot N] [--cold N]\n"
            "                    [--snapshot-threshold N] [--keep]\n"
            "       tenure-fault --sweep       remove what dead runs left\n"
            "       tenure-fault --self-test   the checker on planted "
            "violations\n"
            "kinds: kill-leader kill-follower pause-leader pause-holder "
            "isolate-leader split\n"
            "       restart-all disk-full corrupt\n");
}

static int parseKinds(const char *list, unsigned *mask)
{
    char buf[512];
    strf(buf, sizeof buf, "%s", list);
    char *save = NULL;
    for (char *it = strtok_r(buf, ",", &save); it != NULL;
         it = strtok_r(NULL, ",", &save)) {
        int k = 0;
        while (k < F_KIND_COUNT && strcmp(faultName(k), it) != 0) {
            k++;
        }
        if (k == F_KIND_COUNT) {
            fprintf(stderr, "tenure-fault: unknown fault kind '%s'\n", it);
            return -1;
        }
        *mask |= 1u << k;
    }
    return 0;
}

static int spawnWorker(struct env *e, int w, bool lib, int actors, int hot,
                       int cold)
{
    struct fworker *wk = &e->workers[w];
    wk->lib = lib;
    strf(wk->history, sizeof wk->history, "%s/history-%d.txt", e->root,
             w);
    strf(wk->log_path, sizeof wk->log_path, "%s/worker-%d.log", e->root,
             w);
    char id[16], na[16], seed[32], h[16], c[16], ttl[16];
    strf(id, sizeof id, "%d", w + 1);
    strf(na, sizeof na, "%d", actors);
    strf(seed, sizeof seed, "%llu", (unsigned long long)e->seed);
    strf(h, sizeof h, "%d", hot);
    strf(c, sizeof c, "%d", cold);
    strf(ttl, sizeof ttl, "%d", e->ttl_ms);
    const char *argv[] = {
        e->self,    "worker",          "--kind",   lib ? "lib" : "http",
        "--id",     id,                "--actors", na,
        "--seed",   seed,              "--rpc",    e->rpc_endpoints,
        "--http",   e->http_list,      "--store",  e->store_path,
        "--history", wk->history,      "--hot",    h,
        "--cold",   c,                 "--ttl",    ttl,
        NULL
    };
    int log = open(wk->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                   0644);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        if (log >= 0) {
            dup2(log, STDOUT_FILENO);
            dup2(log, STDERR_FILENO);
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(e->self, (char *const *)argv);
        _exit(127);
    }
    if (log >= 0) {
        close(log);
    }
    wk->pid = pid;
    e->n_workers = w + 1 > e->n_workers ? w + 1 : e->n_workers;
    return 0;
}

/* Counts the Q lines in every history file. */
static int countQuiesced(struct env *e)
{
    int q = 0;
    for (int w = 0; w < e->n_workers; w++) {
        FILE *f = fopen(e->workers[w].history, "r");
        if (f == NULL) {
            continue;
        }
        char line[1024];
        while (fgets(line, sizeof line, f) != NULL) {
            q += line[0] == 'Q';
        }
        fclose(f);
    }
    return q;
}

static void checkWorkers(struct env *e)
{
    for (int w = 0; w < e->n_workers; w++) {
        struct fworker *wk = &e->workers[w];
        if (wk->pid <= 0) {
            continue;
        }
        int st;
        if (waitpid(wk->pid, &st, WNOHANG) == wk->pid) {
            wk->pid = 0;
            addNote(e, true, "worker %d exited early (status 0x%x); see %s",
                    w, (unsigned)st, wk->log_path);
        }
    }
}

/* Reads every held lock through the library (linearizable). */
static bool finalLib(struct env *e, struct final_lock **out, size_t *n)
{
    for (int attempt = 0; attempt < 20 && !g_abort; attempt++) {
        struct tn_lock_info *locks = NULL;
        size_t count = 0;
        int rc = tn_lock_list(probeClient(), "", 100000, NULL, &locks,
                              &count);
        if (rc == TN_OK) {
            size_t k = 0;
            for (size_t i = 0; i < count; i++) {
                k += locks[i].n_holders;
            }
            *out = calloc(k + 1, sizeof **out);
            *n = 0;
            for (size_t i = 0; i < count; i++) {
                for (size_t h = 0; h < locks[i].n_holders; h++) {
                    struct final_lock *fl = &(*out)[(*n)++];
                    strf(fl->resource, sizeof fl->resource, "%s",
                             locks[i].resource);
                    fl->token = locks[i].holders[h].token;
                }
            }
            tn_lock_list_free(locks, count);
            return true;
        }
        flog("final state through the library: %s", tn_errname(rc));
        idle(e, 500);
    }
    return false;
}

/* Reads the anchors through the HTTP shim of some node. */
static bool finalHttp(struct env *e, struct final_lock **out, size_t *n)
{
    for (int attempt = 0; attempt < 20 && !g_abort; attempt++) {
        int i = attempt % e->n_nodes;
        struct fnode *node = &e->nodes[i];
        struct hresp r;
        int st = hRequest(node->ip, node->http_port, "GET",
                          "/v1/locks?prefix=anchor/&limit=100000", NULL,
                          NULL, 5000, &r);
        if (st == 200) {
            json_t *j = json_loads(r.body, 0, NULL);
            json_t *locks = j ? json_object_get(j, "locks") : NULL;
            if (json_is_array(locks)) {
                size_t cnt = json_array_size(locks);
                *out = calloc(cnt + 1, sizeof **out);
                *n = 0;
                for (size_t k = 0; k < cnt; k++) {
                    json_t *l = json_array_get(locks, k);
                    const char *res =
                        json_string_value(json_object_get(l, "resource"));
                    json_t *tok = json_object_get(l, "token");
                    if (res != NULL && json_is_integer(tok)) {
                        struct final_lock *fl = &(*out)[(*n)++];
                        snprintf(fl->resource, sizeof fl->resource, "%s",
                                 res);
                        fl->token = (uint64_t)json_integer_value(tok);
                    }
                }
                json_decref(j);
                hFree(&r);
                return true;
            }
            json_decref(j);
        }
        hFree(&r);
        idle(e, 300);
    }
    return false;
}

static void printCapabilities(struct env *e)
{
    flog("network namespaces: %s%s", e->netns ? "yes" : "NO — ",
         e->netns ? "" : e->why_no_netns);
    flog("packet filter (nft): %s%s", e->nft ? "yes" : "NO — ",
         e->nft ? "" : e->why_no_nft);
    flog("loop-mounted disks: %s%s", e->loop ? "yes" : "NO — ",
         e->loop ? "" : e->why_no_loop);
    if (!e->nft) {
        flog("SKIPPED fault kinds isolate-leader and split: %s",
             e->why_no_nft);
    }
    if (!e->loop) {
        flog("SKIPPED fault kind disk-full: %s", e->why_no_loop);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "worker") == 0) {
        return workerMain(argc - 1, argv + 1);
    }
    static struct env env;
    struct env *e = &env;
    g_env = e;
    e->seed = 0;
    e->n_nodes = 3;
    e->ttl_ms = 2000;
    e->recovery_bound_ms = 20000;
    e->snapshot_threshold = 1024;
    e->profile = "short";
    int lib_workers = 2;
    int http_workers = 1;
    int actors = 3;
    int hot = 3;
    int cold = 200;
    bool seeded = false;
    const char *bin = getenv("TENURE_BIN_DIR");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV()             \
    do {                    \
        if (v == NULL) {    \
            usage();        \
            return 2;       \
        }                   \
        i++;                \
    } while (0)
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            return 0;
        } else if (strcmp(a, "--sweep") == 0) {
            envSweep();
            return 0;
        } else if (strcmp(a, "--self-test") == 0) {
            return checkSelfTest();
        } else if (strcmp(a, "--seed") == 0) {
            NEEDV();
            e->seed = strtoull(v, NULL, 10);
            seeded = true;
        } else if (strcmp(a, "--nodes") == 0) {
            NEEDV();
            e->n_nodes = atoi(v);
        } else if (strcmp(a, "--long") == 0) {
            e->long_profile = true;
            e->profile = "long";
        } else if (strcmp(a, "--faults") == 0) {
            NEEDV();
            e->n_faults = atoi(v);
        } else if (strcmp(a, "--duration") == 0) {
            NEEDV();
            e->duration_s = atoi(v);
        } else if (strcmp(a, "--only") == 0) {
            NEEDV();
            if (parseKinds(v, &e->only_mask) != 0) {
                return 2;
            }
        } else if (strcmp(a, "--ttl") == 0) {
            NEEDV();
            e->ttl_ms = atoi(v);
        } else if (strcmp(a, "--recovery-bound") == 0) {
            NEEDV();
            e->recovery_bound_ms = atoi(v);
        } else if (strcmp(a, "--bin") == 0) {
            NEEDV();
            bin = v;
        } else if (strcmp(a, "--lib-workers") == 0) {
            NEEDV();
            lib_workers = atoi(v);
        } else if (strcmp(a, "--http-workers") == 0) {
            NEEDV();
            http_workers = atoi(v);
        } else if (strcmp(a, "--actors") == 0) {
            NEEDV();
            actors = atoi(v);
        } else if (strcmp(a, "--hot") == 0) {
            NEEDV();
            hot = atoi(v);
        } else if (strcmp(a, "--cold") == 0) {
            NEEDV();
            cold = atoi(v);
        } else if (strcmp(a, "--snapshot-threshold") == 0) {
            NEEDV();
            e->snapshot_threshold = atoi(v);
        } else if (strcmp(a, "--keep") == 0) {
            e->keep = true;
        } else {
            usage();
            return 2;
        }
#undef NEEDV
    }
    if (e->n_nodes < 3 || e->n_nodes > FAULT_MAX_NODES ||
        lib_workers + http_workers > MAX_WORKERS || lib_workers < 1 ||
        http_workers < 0 || actors < 1 || hot < 1 || e->ttl_ms < 1000) {
        usage();
        return 2;
    }
    if (!seeded) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        e->seed = ((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
                   (uint64_t)getpid()) %
                  1000000000ULL;
    }
    rngSeed(&e->rng, e->seed);
    e->t_start = nowUs();
    flogSetStart(e->t_start);

    ssize_t sl = readlink("/proc/self/exe", e->self, sizeof e->self - 1);
    if (sl <= 0) {
        fprintf(stderr, "tenure-fault: cannot find myself\n");
        return 2;
    }
    e->self[sl] = '\0';
    if (bin == NULL || *bin == '\0') {
        char dir[FAULT_PATH];
        strf(dir, sizeof dir, "%s", e->self);
        char *slash = strrchr(dir, '/');
        if (slash != NULL) {
            *slash = '\0';
        }
        /* tests/fault/ under the build dir: tenured is two levels up. */
        strf(e->tenured, sizeof e->tenured, "%s/../../tenured", dir);
        if (access(e->tenured, X_OK) != 0) {
            strf(e->tenured, sizeof e->tenured, "%s/tenured", dir);
        }
    } else {
        strf(e->tenured, sizeof e->tenured, "%s/tenured", bin);
    }
    if (access(e->tenured, X_OK) != 0) {
        fprintf(stderr, "tenure-fault: no tenured at %s (use --bin DIR)\n",
                e->tenured);
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = onAbort;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    envSweep();
    strf(e->tag, sizeof e->tag, "tf%06x", (unsigned)getpid() & 0xffffff);
    const char *tmp = getenv("TMPDIR");
    strf(e->root, sizeof e->root, "%s/tenure-fault-%d",
             tmp != NULL && *tmp != '\0' ? tmp : "/tmp", (int)getpid());
    removeTree(e->root);
    if (mkdirP(e->root, 0755) != 0) {
        fprintf(stderr, "tenure-fault: mkdir %s: %s\n", e->root,
                strerror(errno));
        return 2;
    }
    strf(e->store_path, sizeof e->store_path, "%s/store.sock", e->root);

    flog("tenure-fault: profile=%s nodes=%d seed=%llu (reproduce with "
         "--seed %llu%s --nodes %d)",
         e->profile, e->n_nodes, (unsigned long long)e->seed,
         (unsigned long long)e->seed, e->long_profile ? " --long" : "",
         e->n_nodes);
    envDetect(e);
    printCapabilities(e);

    int rv = 2;
    struct store *store = NULL;
    struct final_lock *final_locks = NULL;
    size_t n_final = 0;
    struct final_lock *http_anchors = NULL;
    size_t n_http = 0;
    if (envSetup(e) != 0) {
        flog("setup failed");
        goto out;
    }
    for (int i = 0; i < e->n_nodes; i++) {
        if (nodeStart(e, i) != 0) {
            goto out;
        }
    }
    int64_t t0 = nowUs();
    int leader = -1;
    while (leader < 0 && nowUs() - t0 < 30000000 && !g_abort) {
        superviseNodes(e);
        leader = findLeader(e, true, 1000);
        if (leader < 0) {
            sleepMs(100);
        }
    }
    if (leader < 0) {
        flog("no leader within 30 s of start");
        goto out;
    }
    flog("cluster up: leader node %d after %lld ms", e->nodes[leader].id,
         (long long)((nowUs() - t0) / 1000));
    if (storeStart(&store, e->store_path) != 0 || probeInit(e) != 0) {
        flog("cannot start the store or the probe client");
        goto out;
    }
    for (int w = 0; w < lib_workers + http_workers; w++) {
        if (spawnWorker(e, w, w < lib_workers, actors, hot, cold) != 0) {
            flog("cannot start worker %d", w);
            goto out;
        }
    }
    idle(e, 2000);
    checkWorkers(e);

    runSchedule(e);
    checkWorkers(e);

    /* Heal everything and quiesce. */
    if (e->nft) {
        healNetwork(e);
    }
    for (int w = 0; w < e->n_workers; w++) {
        if (e->workers[w].pid > 0) {
            kill(e->workers[w].pid, SIGCONT);
        }
    }
    int64_t final_rec = waitRecovery(e, e->recovery_bound_ms);
    flog("final recovery: %lld ms", (long long)final_rec);
    for (int w = 0; w < e->n_workers; w++) {
        if (e->workers[w].pid > 0) {
            kill(e->workers[w].pid, SIGUSR1);
        }
    }
    int want_q = (lib_workers + http_workers) * actors;
    int64_t tq = nowUs();
    int got_q = 0;
    while ((got_q = countQuiesced(e)) < want_q &&
           nowUs() - tq < 40000000 && !g_abort) {
        idle(e, 200);
    }
    if (got_q < want_q) {
        addNote(e, true, "only %d of %d actors quiesced within 40 s", got_q,
                want_q);
    }
    bool lib_ok = finalLib(e, &final_locks, &n_final);
    bool http_ok = finalHttp(e, &http_anchors, &n_http);
    flog("final state: %zu held locks (library), %zu anchors (HTTP)",
         n_final, n_http);
    for (int w = 0; w < e->n_workers; w++) {
        if (e->workers[w].pid > 0) {
            kill(e->workers[w].pid, SIGTERM);
        }
    }
    for (int w = 0; w < e->n_workers; w++) {
        struct fworker *wk = &e->workers[w];
        int64_t until = nowUs() + 15000000;
        while (wk->pid > 0 && nowUs() < until) {
            int st;
            if (waitpid(wk->pid, &st, WNOHANG) == wk->pid) {
                wk->pid = 0;
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                    addNote(e, true, "worker %d ended with status 0x%x", w,
                            (unsigned)st);
                }
                break;
            }
            sleepMs(20);
        }
        if (wk->pid > 0) {
            addNote(e, true, "worker %d did not exit within 15 s", w);
            kill(wk->pid, SIGKILL);
            waitpid(wk->pid, NULL, 0);
            wk->pid = 0;
        }
    }
    superviseNodes(e);
    storeStop(store);

    struct check_input in = { .e = e, .final_ok = lib_ok,
                              .final_locks = final_locks,
                              .n_final = n_final,
                              .http_anchors = http_anchors,
                              .n_http_anchors = n_http, .http_ok = http_ok };
    in.store = storeLog(store, &in.n_store);
    struct check_result res;
    checkHistory(&in, &res);

    int64_t worst = 0;
    int failures = 0;
    for (int f = 0; f < e->n_fault_recs; f++) {
        if (e->faults[f].recovery_ms > worst) {
            worst = e->faults[f].recovery_ms;
        }
    }
    if (final_rec > worst) {
        worst = final_rec;
    }
    fprintf(stderr, "\nfaults injected (%d):\n", e->n_fault_recs);
    for (int f = 0; f < e->n_fault_recs; f++) {
        const struct fault_rec *r = &e->faults[f];
        fprintf(stderr,
                "  #%-3d %-14s at %7.1fs  recovered in %6lld ms  sessions "
                "lost %d  %s\n",
                f + 1, faultName(r->kind),
                (double)(r->t_inject - e->t_start) / 1e6,
                (long long)r->recovery_ms, r->sessions_lost, r->what);
    }
    fprintf(stderr, "per kind: count, worst recovery (ms), library "
                    "sessions lost:\n");
    for (int k = 0; k < F_KIND_COUNT; k++) {
        int cnt = 0;
        int lost = 0;
        int64_t w = 0;
        for (int f = 0; f < e->n_fault_recs; f++) {
            if (e->faults[f].kind == k) {
                cnt++;
                lost += e->faults[f].sessions_lost;
                if (e->faults[f].recovery_ms > w) {
                    w = e->faults[f].recovery_ms;
                }
            }
        }
        if (cnt > 0) {
            fprintf(stderr, "  %-14s %4d  %6lld  %4d\n", faultName(k), cnt,
                    (long long)w, lost);
        }
    }
    if (e->n_notes > 0) {
        fprintf(stderr, "findings and notes (%d):\n", e->n_notes);
        for (int k = 0; k < e->n_notes; k++) {
            fprintf(stderr, "  %s %s\n", e->notes[k].failure ? "FAIL" : "ok  ",
                    e->notes[k].text);
            failures += e->notes[k].failure;
        }
    }
    bool pass = res.violations == 0 && failures == 0 && final_rec >= 0 &&
                !g_abort;
    printf("fault summary: profile=%s nodes=%d seed=%llu faults=%d "
           "operations=%ld grants=%ld writes_accepted=%ld "
           "writes_rejected=%ld sessions_lost=%ld violations=%ld "
           "worst_recovery_ms=%lld "
           "crashes=%d external_stops=%d findings=%d result=%s\n",
           e->profile, e->n_nodes, (unsigned long long)e->seed,
           e->n_fault_recs, res.ops, res.grants, res.writes_accepted,
           res.writes_rejected, res.sessions_lost, res.violations, (long long)worst, e->crashes,
           e->external, failures, pass ? "PASS" : "FAIL");
    fflush(stdout);
    if (!pass) {
        fprintf(stderr,
                "FAILED: reproduce with: tests/fault/run.sh --seed %llu "
                "--nodes %d%s  (logs: rerun with --keep)\n",
                (unsigned long long)e->seed, e->n_nodes,
                e->long_profile ? " --long" : "");
        for (int i = 0; i < e->n_nodes; i++) {
            char *tail = readTail(e->nodes[i].log_path, 3000);
            fprintf(stderr, "----- node %d log tail -----\n%s\n",
                    e->nodes[i].id, tail ? tail : "");
            free(tail);
        }
    }
    rv = pass ? 0 : 1;

out:
    probeClose();
    envTeardown(e);
    storeFree(store);
    free(final_locks);
    free(http_anchors);
    if (g_abort && rv == 0) {
        rv = 2;
    }
    return rv;
}
