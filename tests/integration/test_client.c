/* libtenure and tenurectl against 3 real tenured processes: the library's
 * calls and conflict reports, leader kills during acquire / renew / release
 * (every call returns the right answer, once), waiters across a leader
 * kill, tenurectl's commands and exit codes, and `tenurectl exec` killing
 * its child before the lease's safe deadline when the cluster becomes
 * unreachable. */
#include "lib/test.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/cluster.h"
#include "lib/http.h"
#include "tenure.h"
#include "tenure/uv.h"

struct fixture
{
    struct tn_cluster cluster;
    tn_client *client;
    char tenurectl[512];
    char tmp[256];
    bool stopped[CLUSTER_MAX_NODES]; /* SIGSTOPped by the test */
};

static uint64_t nowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleepMs(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int setUp(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    struct tn_client_opts o;
    const char *bin = getenv("TENURE_BIN_DIR");

    if (f == NULL) {
        return -1;
    }
    *state = f;
    snprintf(f->tenurectl, sizeof f->tenurectl, "%s/tenurectl",
             bin != NULL ? bin : "build");
    snprintf(f->tmp, sizeof f->tmp, "/tmp/tenure-client-test-XXXXXX");
    if (mkdtemp(f->tmp) == NULL) {
        return -1;
    }
    if (clusterStart(&f->cluster, 3) != 0) {
        fprintf(stderr, "clusterStart: %s\n", f->cluster.errmsg);
        return -1;
    }
    if (clusterWaitLeader(&f->cluster, 15000) < 0) {
        fprintf(stderr, "no leader: %s\n", f->cluster.errmsg);
        return -1;
    }
    memset(&o, 0, sizeof o);
    o.timeout_ms = 10000; /* spans a leader election */
    if (tn_client_open(clusterRpcEndpoints(&f->cluster), &o, &f->client) !=
        TN_OK) {
        return -1;
    }
    return 0;
}

static int tearDown(void **state)
{
    struct fixture *f = *state;
    char cmd[300];
    for (int i = 0; i < f->cluster.n; i++) {
        if (f->stopped[i] && f->cluster.nodes[i].pid > 0) {
            kill(f->cluster.nodes[i].pid, SIGCONT);
        }
    }
    if (f->client != NULL) {
        tn_client_close(f->client);
    }
    clusterDestroy(&f->cluster);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->tmp);
    if (system(cmd) != 0) {
        fprintf(stderr, "could not remove %s\n", f->tmp);
    }
    free(f);
    return 0;
}

/* ----------------------------------------------------------- tenurectl */

/* Run tenurectl with @argv (NULL-terminated, without argv[0]) against the
 * cluster; its stdout goes to @out (at most @len bytes, NUL-terminated).
 * Returns its exit status (128 + signal if killed), -1 on failure. */
static int runCtl(struct fixture *f,
                  const char *endpoints,
                  char *out,
                  size_t len,
                  const char *const *argv)
{
    const char *args[32];
    int pipefd[2];
    size_t n = 0;
    size_t got = 0;
    int status;
    pid_t pid;

    args[n++] = f->tenurectl;
    args[n++] = "--endpoints";
    args[n++] = endpoints != NULL ? endpoints
                                  : clusterRpcEndpoints(&f->cluster);
    for (size_t i = 0; argv[i] != NULL && n < 31; i++) {
        args[n++] = argv[i];
    }
    args[n] = NULL;
    if (pipe(pipefd) != 0) {
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        close(pipefd[1]);
        execv(args[0], (char *const *)args);
        _exit(126);
    }
    close(pipefd[1]);
    for (;;) {
        ssize_t r = read(pipefd[0], out + got, len - 1 - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
        if (got == len - 1) {
            break;
        }
    }
    out[got] = '\0';
    close(pipefd[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }
    if (WIFSIGNALED(status)) {
        return 128 + WTERMSIG(status);
    }
    return -1;
}

#define CTL(f, out, ...)                                              \
    runCtl(f, NULL, out, sizeof out,                                 \
           (const char *const[]){ __VA_ARGS__, NULL })

static json_t *parseJson(const char *s)
{
    json_error_t err;
    json_t *j = json_loads(s, JSON_DISABLE_EOF_CHECK, &err);
    if (j == NULL) {
        fail_msg("not JSON (%s): %s", err.text, s);
    }
    return j;
}

static uint64_t jsonU64(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    if (!json_is_integer(v)) {
        fail_msg("no integer \"%s\"", key);
    }
    return (uint64_t)json_integer_value(v);
}

/* acquire / status / release / renew / list / cluster status and their exit
 * codes, in text and JSON. */
static void test_tenurectl_commands(void **state)
{
    struct fixture *f = *state;
    char out[8192];
    char tok[32];
    uint64_t token;
    json_t *j;
    json_t *h;

    /* acquire: 0 and a token. */
    assert_int_equal(CTL(f, out, "--json", "acquire", "ctl/a", "--holder",
                         "alice", "--ttl", "20000"),
                     0);
    j = parseJson(out);
    assert_true(json_is_true(json_object_get(j, "ok")));
    token = jsonU64(j, "token");
    assert_true(token > 0);
    assert_true(jsonU64(j, "session") > 0);
    assert_int_equal(jsonU64(j, "ttl_ms"), 20000);
    json_decref(j);
    snprintf(tok, sizeof tok, "%" PRIu64, token);

    /* Someone else: 3, naming the holder. */
    assert_int_equal(CTL(f, out, "--json", "acquire", "ctl/a", "--holder",
                         "bob"),
                     3);
    j = parseJson(out);
    assert_string_equal(json_string_value(json_object_get(j, "error")),
                        "HELD");
    h = json_object_get(j, "holder");
    assert_string_equal(json_string_value(json_object_get(h, "holder")),
                        "alice");
    assert_int_equal(jsonU64(h, "token"), token);
    json_decref(j);

    /* status: the holder, in text and JSON. */
    assert_int_equal(CTL(f, out, "status", "ctl/a"), 0);
    assert_non_null(strstr(out, "held"));
    assert_non_null(strstr(out, "alice"));
    assert_non_null(strstr(out, tok));
    assert_int_equal(CTL(f, out, "--json", "status", "ctl/a"), 0);
    j = parseJson(out);
    assert_string_equal(json_string_value(json_object_get(j, "state")),
                        "held");
    h = json_array_get(json_object_get(j, "holders"), 0);
    assert_int_equal(jsonU64(h, "token"), token);
    json_decref(j);

    /* list with a prefix. */
    assert_int_equal(CTL(f, out, "--json", "list", "--prefix", "ctl/"), 0);
    j = parseJson(out);
    assert_int_equal(json_array_size(json_object_get(j, "locks")), 1);
    json_decref(j);
    assert_int_equal(CTL(f, out, "--json", "list", "--prefix", "nothing/"),
                     0);
    j = parseJson(out);
    assert_int_equal(json_array_size(json_object_get(j, "locks")), 0);
    json_decref(j);

    /* renew: the right token 0, a stale one 3. */
    assert_int_equal(CTL(f, out, "renew", "ctl/a", "--token", tok), 0);
    assert_int_equal(CTL(f, out, "renew", "ctl/a", "--token", "1"), 3);

    /* release: wrong token 3 (the lock is untouched), right token 0, and
     * again 0 (a release is idempotent). */
    assert_int_equal(CTL(f, out, "release", "ctl/a", "--token", "1"), 3);
    assert_int_equal(CTL(f, out, "status", "ctl/a"), 0);
    assert_non_null(strstr(out, "held"));
    assert_int_equal(CTL(f, out, "release", "ctl/a", "--token", tok), 0);
    assert_int_equal(CTL(f, out, "release", "ctl/a", "--token", tok), 0);
    assert_int_equal(CTL(f, out, "status", "ctl/a"), 0);
    assert_non_null(strstr(out, "free"));

    /* A new grant has a larger token. */
    assert_int_equal(CTL(f, out, "--json", "acquire", "ctl/a"), 0);
    j = parseJson(out);
    assert_true(jsonU64(j, "token") > token);
    json_decref(j);

    /* cluster status names the leader and three members. */
    assert_int_equal(CTL(f, out, "--json", "cluster", "status"), 0);
    j = parseJson(out);
    assert_true(jsonU64(j, "leader_id") >= 1);
    assert_int_equal(json_array_size(json_object_get(j, "members")), 3);
    json_decref(j);

    /* Usage errors: 2. */
    assert_int_equal(CTL(f, out, "release", "ctl/a"), 2);
    assert_int_equal(CTL(f, out, "frobnicate"), 2);
    assert_int_equal(CTL(f, out, "acquire"), 2);
    assert_int_equal(CTL(f, out, "acquire", "x", "--ttl", "abc"), 2);
    assert_int_equal(CTL(f, out, "status", "bad\x01name"), 2);
    clusterPassed(&f->cluster);
}

/* Nothing reachable: exit code 4, quickly. */
static void test_tenurectl_unavailable(void **state)
{
    struct fixture *f = *state;
    char out[1024];
    uint64_t t0 = nowMs();
    /* Port 1 on loopback: connection refused. */
    assert_int_equal(runCtl(f, "127.0.0.1:1", out, sizeof out,
                            (const char *const[]){ "--timeout", "500",
                                                   "cluster", "status",
                                                   NULL }),
                     4);
    assert_true(nowMs() - t0 < 3000);
    clusterPassed(&f->cluster);
}

/* exec runs the command with the token, returns its exit code and releases
 * the lock afterwards; a held lock gives 3 without running anything. */
static void test_tenurectl_exec(void **state)
{
    struct fixture *f = *state;
    char out[4096];
    char script[700];
    struct tn_lock_info info;
    json_t *j;

    snprintf(script, sizeof script,
             "echo \"token=$TENURE_TOKEN resource=$TENURE_RESOURCE\"; "
             "exit 7");
    assert_int_equal(CTL(f, out, "exec", "--ttl", "5000", "ctl/exec", "--",
                         "sh", "-c", script),
                     7);
    assert_non_null(strstr(out, "resource=ctl/exec"));
    assert_null(strstr(out, "token= "));
    assert_int_equal(tn_lock_status(f->client, "ctl/exec", NULL, &info),
                     TN_OK);
    assert_int_equal(info.state, TN_STATE_FREE);
    tn_lock_info_clear(&info);

    /* Held by someone else: 3 and the command does not run. */
    assert_int_equal(CTL(f, out, "--json", "acquire", "ctl/exec", "--holder",
                         "other"),
                     0);
    j = parseJson(out);
    json_decref(j);
    snprintf(script, sizeof script, "touch '%s/ran'", f->tmp);
    assert_int_equal(CTL(f, out, "exec", "ctl/exec", "--", "sh", "-c",
                         script),
                     3);
    snprintf(script, sizeof script, "%s/ran", f->tmp);
    assert_int_not_equal(access(script, F_OK), 0);
    clusterPassed(&f->cluster);
}

/* When the cluster becomes unreachable (every daemon SIGSTOPped), exec
 * stops its child before the lease's safe deadline: the last renewal was
 * sent before the freeze, so the deadline is at most
 * freeze + ttl x (1 - rho) - epsilon. */
static void test_tenurectl_exec_kills_child_when_unreachable(void **state)
{
    struct fixture *f = *state;
    char started[300];
    char script[900];
    const char *args[16];
    const uint32_t ttl = 2000;
    uint64_t frozen_at;
    uint64_t exited_at;
    int status;
    pid_t pid;

    snprintf(started, sizeof started, "%s/started", f->tmp);
    snprintf(script, sizeof script,
             "echo $TENURE_TOKEN > '%s'; while :; do sleep 0.02; done",
             started);
    args[0] = f->tenurectl;
    args[1] = "--endpoints";
    args[2] = clusterRpcEndpoints(&f->cluster);
    args[3] = "exec";
    args[4] = "--ttl";
    args[5] = "2000";
    args[6] = "ctl/frozen";
    args[7] = "--";
    args[8] = "sh";
    args[9] = "-c";
    args[10] = script;
    args[11] = NULL;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execv(args[0], (char *const *)args);
        _exit(126);
    }
    /* Wait for the child to run, then let a keepalive or two succeed. */
    for (int i = 0; i < 500 && access(started, F_OK) != 0; i++) {
        sleepMs(10);
    }
    assert_int_equal(access(started, F_OK), 0);
    sleepMs(300);
    frozen_at = nowMs();
    for (int i = 0; i < f->cluster.n; i++) {
        assert_int_equal(kill(f->cluster.nodes[i].pid, SIGSTOP), 0);
        f->stopped[i] = true;
    }
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            break;
        }
        if (nowMs() - frozen_at > 10000) {
            kill(pid, SIGKILL);
            fail_msg("tenurectl exec still running 10 s after the freeze");
        }
        sleepMs(5);
    }
    exited_at = nowMs();
    for (int i = 0; i < f->cluster.n; i++) {
        kill(f->cluster.nodes[i].pid, SIGCONT);
        f->stopped[i] = false;
    }
    /* The shell died of SIGTERM (143) or SIGKILL (137). */
    assert_true(WIFEXITED(status));
    assert_true(WEXITSTATUS(status) == 143 || WEXITSTATUS(status) == 137);
    /* ttl x 0.99 - 50 ms = 1930 ms after the freeze at the latest. */
    if (exited_at - frozen_at >= ttl * 99 / 100 - 50) {
        fail_msg("child stopped %" PRIu64 " ms after the freeze",
                 exited_at - frozen_at);
    }
    clusterPassed(&f->cluster);
}

/* ------------------------------------------------------------- library */

/* Conflicts carry the holder; status and list see the lock; renew works;
 * an unknown resource is free. */
static void test_library_calls(void **state)
{
    struct fixture *f = *state;
    struct tn_conflict k;
    struct tn_acquire_opts o;
    struct tn_lock_info info;
    struct tn_lock_info *locks;
    struct tn_cluster_info ci;
    size_t n;
    tn_session *a;
    tn_session *b;
    tn_lock *l;
    tn_lock *l2 = NULL;
    uint32_t granted = 0;

    assert_int_equal(tn_session_open(f->client, "lib-a", 10000, NULL, &a),
                     TN_OK);
    assert_int_equal(tn_session_open(f->client, "lib-b", 10000, NULL, &b),
                     TN_OK);
    assert_int_equal(tn_session_ttl_ms(a), 10000);
    assert_int_equal(tn_lock_acquire(a, "lib/x", NULL, &l), TN_OK);
    memset(&o, 0, sizeof o);
    o.conflict = &k;
    assert_int_equal(tn_lock_acquire(b, "lib/x", &o, &l2), TN_HELD);
    assert_int_equal(k.n_holders, 1);
    assert_string_equal(k.holder.holder, "lib-a");
    assert_int_equal(k.holder.token, tn_lock_token(l));
    assert_int_equal(k.holder.session, tn_session_id(a));
    assert_true(k.holder.acquired_at_ms > 1600000000000ULL);
    assert_non_null(strstr(tn_client_errmsg(f->client), "lib-a"));

    /* The same session again: the same token. */
    assert_int_equal(tn_lock_acquire(a, "lib/x", NULL, &l2), TN_OK);
    assert_int_equal(tn_lock_token(l2), tn_lock_token(l));
    tn_lock_free(l2);

    assert_int_equal(tn_lock_status(f->client, "lib/x", NULL, &info), TN_OK);
    assert_int_equal(info.state, TN_STATE_HELD);
    assert_string_equal(info.resource, "lib/x");
    assert_int_equal(info.holders[0].token, tn_lock_token(l));
    tn_lock_info_clear(&info);
    assert_int_equal(tn_lock_status(f->client, "lib/never", NULL, &info),
                     TN_OK);
    assert_int_equal(info.state, TN_STATE_FREE);
    assert_int_equal(info.n_holders, 0);
    tn_lock_info_clear(&info);
    {
        struct tn_read_opts ro;
        memset(&ro, 0, sizeof ro);
        ro.stale = true;
        assert_int_equal(tn_lock_status(f->client, "lib/x", &ro, &info),
                         TN_OK);
        assert_int_equal(info.state, TN_STATE_HELD);
        tn_lock_info_clear(&info);
    }
    assert_int_equal(tn_lock_list(f->client, "lib/", 0, NULL, &locks, &n),
                     TN_OK);
    assert_int_equal(n, 1);
    assert_string_equal(locks[0].resource, "lib/x");
    tn_lock_list_free(locks, n);

    assert_int_equal(tn_lock_renew(l, 0), TN_OK);
    assert_true(tn_lock_valid(l));
    assert_int_equal(tn_renew(f->client, "lib/x", tn_lock_token(l), 0,
                              &granted),
                     TN_OK);
    assert_int_equal(granted, 10000);
    assert_int_equal(tn_renew(f->client, "lib/x", 1, 0, NULL),
                     TN_TOKEN_MISMATCH);
    assert_int_equal(tn_release(f->client, "lib/x", 1), TN_TOKEN_MISMATCH);

    assert_int_equal(tn_cluster_status(f->client, &ci), TN_OK);
    assert_true(ci.leader_id >= 1);
    assert_int_equal(ci.n_members, 3);
    tn_cluster_info_clear(&ci);

    /* Closing the session releases its locks. */
    assert_int_equal(tn_session_close(a), TN_OK);
    assert_false(tn_lock_valid(l));
    tn_lock_free(l);
    assert_int_equal(tn_lock_acquire(b, "lib/x", NULL, &l), TN_OK);
    tn_lock_free(l);
    assert_int_equal(tn_session_close(b), TN_OK);
    clusterPassed(&f->cluster);
}

struct worker
{
    struct fixture *f;
    tn_session *s;
    int id;
    int stop; /* atomic */
    int rounds;
    int bad;
    int bad_rc;
    char bad_what[32];
    uint64_t last_token;
};

static void *workerMain(void *arg)
{
    struct worker *w = arg;
    char res[64];

    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        tn_lock *l;
        int rc;
        snprintf(res, sizeof res, "churn/%d/%d", w->id, w->rounds);
        rc = tn_lock_acquire(w->s, res, NULL, &l);
        if (rc != TN_OK) {
            w->bad++;
            w->bad_rc = rc;
            snprintf(w->bad_what, sizeof w->bad_what, "acquire");
            break;
        }
        if (tn_lock_token(l) <= w->last_token) {
            w->bad++;
            snprintf(w->bad_what, sizeof w->bad_what, "token order");
        }
        w->last_token = tn_lock_token(l);
        rc = tn_lock_renew(l, 0);
        if (rc != TN_OK) {
            w->bad++;
            w->bad_rc = rc;
            snprintf(w->bad_what, sizeof w->bad_what, "renew");
            tn_lock_free(l);
            break;
        }
        rc = tn_lock_release(l);
        tn_lock_free(l);
        if (rc != TN_OK) {
            w->bad++;
            w->bad_rc = rc;
            snprintf(w->bad_what, sizeof w->bad_what, "release");
            break;
        }
        w->rounds++;
    }
    return NULL;
}

/* Acquire / renew / release loops run on 4 threads while the leader is
 * killed twice: every call still returns OK (a retry after the kill gets
 * the original answer: no TOKEN_MISMATCH / LEASE_EXPIRED from a release
 * applied twice, no HELD from an acquire applied twice), tokens keep
 * increasing, and nothing stays held afterwards. */
static void test_leader_kill_during_calls(void **state)
{
    struct fixture *f = *state;
    struct worker w[4];
    pthread_t t[4];
    struct tn_lock_info *locks;
    size_t n;
    tn_session *s;

    assert_int_equal(tn_session_open(f->client, "churn", 10000, NULL, &s),
                     TN_OK);
    for (int i = 0; i < 4; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].f = f;
        w[i].s = s;
        w[i].id = i;
        assert_int_equal(pthread_create(&t[i], NULL, workerMain, &w[i]), 0);
    }
    for (int round = 0; round < 2; round++) {
        int leader;
        sleepMs(700);
        leader = clusterWaitLeader(&f->cluster, 15000);
        assert_true(leader >= 0);
        assert_int_equal(clusterKill(&f->cluster, leader), 0);
        if (clusterWaitLeader(&f->cluster, 15000) < 0) {
            fail_msg("no new leader: %s", f->cluster.errmsg);
        }
        sleepMs(700);
        assert_int_equal(clusterRestart(&f->cluster, leader), 0);
    }
    sleepMs(500);
    for (int i = 0; i < 4; i++) {
        __atomic_store_n(&w[i].stop, 1, __ATOMIC_RELEASE);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
    }
    for (int i = 0; i < 4; i++) {
        if (w[i].bad != 0) {
            fail_msg("worker %d: %s failed after %d rounds: %s (%s)", i,
                     w[i].bad_what, w[i].rounds, tn_strerror(w[i].bad_rc),
                     tn_client_errmsg(f->client));
        }
        assert_true(w[i].rounds > 3);
    }
    assert_int_equal(tn_lock_list(f->client, "churn/", 0, NULL, &locks, &n),
                     TN_OK);
    assert_int_equal(n, 0);
    tn_lock_list_free(locks, n);
    assert_int_equal(tn_session_close(s), TN_OK);
    clusterPassed(&f->cluster);
}

struct waiter
{
    tn_session *s;
    int rc; /* atomic */
    uint64_t token;
};

static void *waiterMain(void *arg)
{
    struct waiter *w = arg;
    struct tn_acquire_opts o;
    tn_lock *l;
    int rc;
    memset(&o, 0, sizeof o);
    o.wait_ms = 20000;
    rc = tn_lock_acquire(w->s, "queue/x", &o, &l);
    if (rc == TN_OK) {
        w->token = tn_lock_token(l); /* read after the join */
        tn_lock_release(l);
        tn_lock_free(l);
    }
    __atomic_store_n(&w->rc, rc, __ATOMIC_RELEASE);
    return NULL;
}

/* An acquire waiting in the queue while the holder releases gets the lock;
 * the wait counts in the call's deadline. */
static void test_waiting_acquire(void **state)
{
    struct fixture *f = *state;
    struct waiter w;
    pthread_t t;
    tn_session *a;
    tn_lock *l;
    uint64_t t0;

    assert_int_equal(tn_session_open(f->client, "holder", 10000, NULL, &a),
                     TN_OK);
    assert_int_equal(tn_session_open(f->client, "waiter", 10000, NULL, &w.s),
                     TN_OK);
    assert_int_equal(tn_lock_acquire(a, "queue/x", NULL, &l), TN_OK);
    w.rc = -1;
    t0 = nowMs();
    assert_int_equal(pthread_create(&t, NULL, waiterMain, &w), 0);
    /* The waiter is queued, not answered. */
    sleepMs(1500);
    assert_int_equal(__atomic_load_n(&w.rc, __ATOMIC_ACQUIRE), -1);
    assert_int_equal(tn_lock_release(l), TN_OK);
    tn_lock_free(l);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, TN_OK);
    assert_true(nowMs() - t0 >= 1500);
    tn_session_close(a);
    tn_session_close(w.s);
    clusterPassed(&f->cluster);
}

/* A queued acquire survives a kill -9 of the leader: the library resends it
 * (same client id and sequence number) to the new leader, where it is
 * still queued, and it is granted when the holder releases. */
static void test_waiting_acquire_across_leader_kill(void **state)
{
    struct fixture *f = *state;
    struct waiter w;
    pthread_t t;
    tn_session *a;
    tn_lock *l;
    uint64_t held_token;
    int leader;

    assert_int_equal(tn_session_open(f->client, "holder", 10000, NULL, &a),
                     TN_OK);
    assert_int_equal(tn_session_open(f->client, "waiter", 10000, NULL, &w.s),
                     TN_OK);
    assert_int_equal(tn_lock_acquire(a, "queue/x", NULL, &l), TN_OK);
    held_token = tn_lock_token(l);
    w.rc = -1;
    assert_int_equal(pthread_create(&t, NULL, waiterMain, &w), 0);
    sleepMs(500);
    leader = clusterWaitLeader(&f->cluster, 15000);
    assert_true(leader >= 0);
    assert_int_equal(clusterKill(&f->cluster, leader), 0);
    if (clusterWaitLeader(&f->cluster, 15000) < 0) {
        fail_msg("no new leader: %s", f->cluster.errmsg);
    }
    sleepMs(500);
    assert_int_equal(__atomic_load_n(&w.rc, __ATOMIC_ACQUIRE), -1);
    assert_int_equal(tn_lock_release(l), TN_OK);
    tn_lock_free(l);
    pthread_join(t, NULL);
    if (w.rc != TN_OK) {
        fail_msg("waiter: %s (%s)", tn_strerror(w.rc),
                 tn_client_errmsg(f->client));
    }
    assert_true(w.token > held_token);
    tn_session_close(a);
    tn_session_close(w.s);
    clusterPassed(&f->cluster);
}

/* ------------------------------------------------------------ examples */

/* Build examples/NAME.c with a plain cc command, as a user would, into the
 * test's temp dir. */
static void buildExample(struct fixture *f, const char *name)
{
    const char *src = getenv("TENURE_SOURCE_DIR");
    const char *bin = getenv("TENURE_BIN_DIR");
    char cmd[2048];
    if (src == NULL || bin == NULL) {
        fail_msg("TENURE_SOURCE_DIR and TENURE_BIN_DIR must be set");
    }
    /* A sanitized libtenure needs a sanitized program (the runtime must
     * come first). */
#if defined(__SANITIZE_ADDRESS__)
    const char *san = "-fsanitize=address,undefined";
#elif defined(__SANITIZE_THREAD__)
    const char *san = "-fsanitize=thread";
#else
    const char *san = "";
#endif
    snprintf(cmd, sizeof cmd,
             "cc %s -Wall -Wextra -Werror -I'%s/include' -o '%s/%s' "
             "'%s/examples/%s.c' -L'%s' -ltenure -Wl,-rpath,'%s'",
             san, src, f->tmp, name, src, name, bin, bin);
    if (system(cmd) != 0) {
        fail_msg("could not build the example: %s", cmd);
    }
}

/* Run a shell command line; returns its exit status. */
static int shell(const char *cmd)
{
    int status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The fenced writer: two at once share the store in turn, the tokens in
 * the store never go down, and a writer whose token is older than one the
 * store has seen is refused. */
static void test_example_fenced_writer(void **state)
{
    struct fixture *f = *state;
    char cmd[2048];
    char store[300];
    char line[256];
    uint64_t prev = 0;
    int lines = 0;
    FILE *in;

    buildExample(f, "fenced_writer");
    snprintf(store, sizeof store, "%s/store", f->tmp);
    snprintf(cmd, sizeof cmd,
             "'%s/fenced_writer' '%s' ex/store '%s' 100 w1 >/dev/null & "
             "'%s/fenced_writer' '%s' ex/store '%s' 100 w2 >/dev/null; "
             "a=$?; wait $!; b=$?; exit $((a + b))",
             f->tmp, clusterRpcEndpoints(&f->cluster), store, f->tmp,
             clusterRpcEndpoints(&f->cluster), store);
    assert_int_equal(shell(cmd), 0);
    in = fopen(store, "r");
    assert_non_null(in);
    while (fgets(line, sizeof line, in) != NULL) {
        uint64_t t = strtoull(line, NULL, 10);
        assert_true(t >= prev);
        prev = t;
        lines++;
    }
    fclose(in);
    assert_int_equal(lines, 200);

    /* A newer holder has written (a token far in the future): the writer's
     * token is lower, the store refuses it (exit status 5). */
    in = fopen(store, "a");
    assert_non_null(in);
    fprintf(in, "%" PRIu64 " future 1\n", (uint64_t)1 << 62);
    fclose(in);
    snprintf(cmd, sizeof cmd,
             "'%s/fenced_writer' '%s' ex/store '%s' 1 w3 >/dev/null 2>&1",
             f->tmp, clusterRpcEndpoints(&f->cluster), store);
    assert_int_equal(shell(cmd), 5);
    clusterPassed(&f->cluster);
}

/* The leader election: three candidates, one leader at a time, each term
 * with a larger token, and leadership moves on when the leader resigns. */
static void test_example_leader_election(void **state)
{
    struct fixture *f = *state;
    char cmd[2048];
    char out[300];
    char line[256];
    uint64_t prev = 0;
    int terms = 0;
    FILE *in;

    buildExample(f, "leader_election");
    snprintf(out, sizeof out, "%s/election.out", f->tmp);
    snprintf(cmd, sizeof cmd,
             "E='%s'; P='%s/leader_election'; "
             "$P \"$E\" ex/elect A 2 >> '%s' & sleep 0.3; "
             "$P \"$E\" ex/elect B 4 >> '%s' & sleep 0.3; "
             "$P \"$E\" ex/elect C 6 >> '%s'; wait",
             clusterRpcEndpoints(&f->cluster), f->tmp, out, out, out);
    assert_int_equal(shell(cmd), 0);
    in = fopen(out, "r");
    assert_non_null(in);
    while (fgets(line, sizeof line, in) != NULL) {
        char name[32];
        unsigned long long token;
        if (sscanf(line, "leader %31s token %llu", name, &token) == 2) {
            assert_true(token > prev);
            prev = token;
            terms++;
        }
    }
    fclose(in);
    /* A leads until it resigns at 2 s, then B until 4 s, then C. */
    assert_int_equal(terms, 3);
    clusterPassed(&f->cluster);
}

/* ---------------------------------------------------- libuv flavour */

struct uvt
{
    uv_loop_t loop;
    tn_client *c;
    tn_session *s1;
    tn_session *s2;
    int opened;
    int acquired;
    int acquire_rc[64];
    tn_lock *locks[64];
    int released;
    int release_rc[64];
    int done;
    int done_rc;
    tn_lock *extra;
    int extra_rc;
    int order; /* 1: the canceled acquire's callback ran before close's */
    bool closed;
    struct tn_uv_req reqs[64];
    struct tn_uv_req req;
    struct tn_uv_req req2;
    struct tn_conflict conflict;
};

static bool uvRunUntil(struct uvt *u, int *flag, int want, unsigned ms)
{
    uint64_t end = nowMs() + ms;
    while (*flag < want && nowMs() < end) {
        uv_run(&u->loop, UV_RUN_ONCE);
    }
    return *flag >= want;
}

static void uvOpened(struct tn_uv_req *req, int rc, tn_session *s)
{
    struct uvt *u = req->data;
    assert_int_equal(rc, TN_OK);
    if (u->s1 == NULL) {
        u->s1 = s;
    } else {
        u->s2 = s;
    }
    u->opened++;
}

static void uvAcquired(struct tn_uv_req *req, int rc, tn_lock *l)
{
    struct uvt *u = req->data;
    int i = (int)(req - u->reqs);
    u->acquire_rc[i] = rc;
    u->locks[i] = l;
    u->acquired++;
}

static void uvReleased(struct tn_uv_req *req, int rc)
{
    struct uvt *u = req->data;
    int i = (int)(req - u->reqs);
    u->release_rc[i] = rc;
    u->released++;
}

static void uvDone(struct tn_uv_req *req, int rc)
{
    struct uvt *u = req->data;
    u->done_rc = rc;
    u->done++;
}

static void uvExtra(struct tn_uv_req *req, int rc, tn_lock *l)
{
    struct uvt *u = req->data;
    u->extra = l;
    u->extra_rc = rc;
    if (!u->closed) {
        u->order = 1;
    }
    u->done++;
}

static void uvClosed(void *data)
{
    struct uvt *u = data;
    u->closed = true;
}

/* The event-loop flavour on the test's own loop: 64 acquires in flight at
 * once, status, a conflict, releases, keepalives on the loop, and close
 * cancelling a waiting acquire before its own callback; the loop ends with
 * no handle left behind. */
static void test_uv_flavour(void **state)
{
    struct fixture *f = *state;
    struct uvt *u = calloc(1, sizeof *u);
    struct tn_acquire_opts o;
    struct tn_lock_info info;
    struct tn_cluster_info ci;
    tn_lock *l;
    int closed_flag = 0;

    assert_non_null(u);
    assert_int_equal(uv_loop_init(&u->loop), 0);
    assert_int_equal(tn_uv_client_open(&u->loop,
                                       clusterRpcEndpoints(&f->cluster), NULL,
                                       &u->c),
                     TN_OK);
    /* Blocking calls are refused on such a client. */
    assert_int_equal(tn_session_open(u->c, "x", 1000, NULL, &u->s1),
                     TN_USAGE);
    u->s1 = NULL;
    u->req.data = u;
    u->req2.data = u;
    assert_int_equal(
        tn_uv_session_open(u->c, &u->req, "uv-a", 1000, NULL, uvOpened),
        TN_OK);
    assert_int_equal(u->opened, 0); /* never from inside the call */
    assert_true(uvRunUntil(u, &u->opened, 1, 10000));
    assert_int_equal(
        tn_uv_session_open(u->c, &u->req2, "uv-b", 10000, NULL, uvOpened),
        TN_OK);
    assert_true(uvRunUntil(u, &u->opened, 2, 10000));

    /* 64 acquires in flight at once. */
    for (int i = 0; i < 64; i++) {
        char res[32];
        snprintf(res, sizeof res, "uv/%d", i);
        u->reqs[i].data = u;
        assert_int_equal(
            tn_uv_lock_acquire(u->s1, &u->reqs[i], res, NULL, uvAcquired),
            TN_OK);
    }
    assert_true(uvRunUntil(u, &u->acquired, 64, 20000));
    for (int i = 0; i < 64; i++) {
        assert_int_equal(u->acquire_rc[i], TN_OK);
        assert_true(tn_lock_valid(u->locks[i]));
        for (int j = 0; j < i; j++) {
            assert_int_not_equal(tn_lock_token(u->locks[i]),
                                 tn_lock_token(u->locks[j]));
        }
    }

    /* Status and a conflict. */
    u->done = 0;
    assert_int_equal(
        tn_uv_lock_status(u->c, &u->req, "uv/7", NULL, &info, uvDone), TN_OK);
    assert_true(uvRunUntil(u, &u->done, 1, 10000));
    assert_int_equal(u->done_rc, TN_OK);
    assert_int_equal(info.state, TN_STATE_HELD);
    assert_int_equal(info.holders[0].token, tn_lock_token(u->locks[7]));
    tn_lock_info_clear(&info);
    memset(&o, 0, sizeof o);
    o.conflict = &u->conflict;
    u->acquired = 0;
    u->reqs[0].data = u;
    assert_int_equal(
        tn_uv_lock_acquire(u->s2, &u->reqs[0], "uv/3", &o, uvAcquired), TN_OK);
    l = u->locks[0];
    assert_true(uvRunUntil(u, &u->acquired, 1, 10000));
    assert_int_equal(u->acquire_rc[0], TN_HELD);
    assert_string_equal(u->conflict.holder.holder, "uv-a");
    u->locks[0] = l;
    u->done = 0;
    assert_int_equal(tn_uv_cluster_status(u->c, &u->req, &ci, uvDone), TN_OK);
    assert_true(uvRunUntil(u, &u->done, 1, 10000));
    assert_int_equal(u->done_rc, TN_OK);
    assert_int_equal(ci.n_members, 3);
    tn_cluster_info_clear(&ci);

    /* Keepalives run on the loop: after 2 TTLs the locks are still valid. */
    {
        uint64_t end = nowMs() + 2000;
        while (nowMs() < end) {
            uv_run(&u->loop, UV_RUN_NOWAIT);
            sleepMs(5);
        }
    }
    assert_true(tn_lock_valid(u->locks[0]));
    assert_true(tn_session_valid(u->s1));

    /* Release them all at once. */
    for (int i = 0; i < 64; i++) {
        assert_int_equal(
            tn_uv_lock_release(u->locks[i], &u->reqs[i], uvReleased), TN_OK);
        assert_false(tn_lock_valid(u->locks[i]));
    }
    assert_true(uvRunUntil(u, &u->released, 64, 20000));
    for (int i = 0; i < 64; i++) {
        assert_int_equal(u->release_rc[i], TN_OK);
        tn_lock_free(u->locks[i]);
    }

    /* A waiting acquire, then close: it completes with TN_CANCELED before
     * the close callback. */
    assert_int_equal(tn_uv_lock_acquire(u->s1, &u->reqs[1], "uv/wait", NULL,
                                        uvAcquired),
                     TN_OK);
    assert_true(uvRunUntil(u, &u->acquired, 2, 10000));
    assert_int_equal(u->acquire_rc[1], TN_OK);
    memset(&o, 0, sizeof o);
    o.wait_ms = 30000;
    u->done = 0;
    assert_int_equal(
        tn_uv_lock_acquire(u->s2, &u->req2, "uv/wait", &o, uvExtra), TN_OK);
    for (int i = 0; i < 20; i++) {
        uv_run(&u->loop, UV_RUN_NOWAIT);
        sleepMs(10);
    }
    assert_int_equal(u->done, 0);
    tn_uv_client_close(u->c, uvClosed, u);
    assert_int_equal(u->done, 0); /* not from inside the call */
    while (!u->closed) {
        uv_run(&u->loop, UV_RUN_ONCE);
    }
    closed_flag = 1;
    assert_int_equal(u->extra_rc, TN_CANCELED);
    assert_int_equal(u->order, 1);
    assert_false(tn_lock_valid(u->locks[1]));
    tn_lock_free(u->locks[1]);
    tn_session_abandon(u->s1);
    tn_session_abandon(u->s2);
    uv_run(&u->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&u->loop), 0);
    free(u);
    assert_int_equal(closed_flag, 1);
    clusterPassed(&f->cluster);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setUp, tearDown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_library_calls),
        T(test_waiting_acquire),
        T(test_waiting_acquire_across_leader_kill),
        T(test_leader_kill_during_calls),
        T(test_tenurectl_commands),
        T(test_tenurectl_unavailable),
        T(test_tenurectl_exec),
        T(test_tenurectl_exec_kills_child_when_unreachable),
        T(test_example_fenced_writer),
        T(test_example_leader_election),
        T(test_uv_flavour),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
