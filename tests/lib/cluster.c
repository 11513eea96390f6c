/* Test fixture: a cluster of real tenured processes (see cluster.h). */
#include "cluster.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http.h"

#define CLUSTER_START_ATTEMPTS 3
#define CLUSTER_START_TIMEOUT_MS 20000
#define CLUSTER_STOP_TIMEOUT_MS 10000
#define CLUSTER_REAP_TIMEOUT_MS 5000
#define CLUSTER_POLL_MS 50
#define CLUSTER_PROBE_TIMEOUT_MS 1000
#define CLUSTER_DUMP_LINES 40

static int64_t clusterNowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void clusterSleepMs(int ms)
{
    struct timespec ts = { .tv_sec = ms / 1000,
                           .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int clusterErr(struct tn_cluster *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int clusterErr(struct tn_cluster *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
    c->failed = true;
    return -1;
}

static bool clusterValidIndex(struct tn_cluster *c, int i)
{
    if (i < 0 || i >= c->n) {
        clusterErr(c, "no node with index %d (cluster of %d)", i, c->n);
        return false;
    }
    return true;
}

int clusterNodeId(int i)
{
    return i + 1;
}

/* ---------------------------------------------------------------- files */

/* rm -rf PATH without leaving libc. */
static void clusterRemoveTree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d != NULL) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (strcmp(e->d_name, ".") == 0 ||
                    strcmp(e->d_name, "..") == 0) {
                    continue;
                }
                char child[CLUSTER_PATH_SIZE * 2];
                int n = snprintf(child, sizeof child, "%s/%s", path, e->d_name);
                if (n > 0 && (size_t)n < sizeof child) {
                    clusterRemoveTree(child);
                }
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void clusterDumpNodeLog(const struct tn_cluster *c, int i, int lines)
{
    const struct tn_cluster_node *node = &c->nodes[i];
    fprintf(stderr,
            "----- node %d (pid %d, raft %d, rpc %d, http %d): last %d lines "
            "of %s -----\n",
            clusterNodeId(i), (int)node->pid, node->raft_port, node->rpc_port,
            node->http_port, lines, node->log_path);
    int fd = open(node->log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "(no log: %s)\n", strerror(errno));
        return;
    }
    struct stat st;
    size_t want = 256 * 1024;
    off_t start = 0;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size > want) {
        start = st.st_size - (off_t)want;
    }
    char *buf = malloc(want + 1);
    ssize_t len = buf ? pread(fd, buf, want, start) : -1;
    close(fd);
    if (len <= 0) {
        fprintf(stderr, "(empty log)\n");
        free(buf);
        return;
    }
    /* Walk back LINES newlines (ignoring a final one). */
    ssize_t from = len - 1;
    if (buf[from] == '\n') {
        from--;
    }
    int seen = 0;
    while (from >= 0) {
        if (buf[from] == '\n' && ++seen == lines) {
            break;
        }
        from--;
    }
    from++;
    fwrite(buf + from, 1, (size_t)(len - from), stderr);
    if (buf[len - 1] != '\n') {
        fputc('\n', stderr);
    }
    free(buf);
}

void clusterDumpLogs(const struct tn_cluster *c, int lines)
{
    for (int i = 0; i < c->n; i++) {
        clusterDumpNodeLog(c, i, lines);
    }
    fflush(stderr);
}

/* ---------------------------------------------------------------- ports */

/* Asks the kernel for 3 * N distinct free ports on 127.0.0.1 (all sockets
 * are held open until every port is known, so they cannot repeat). */
static int clusterPickPorts(struct tn_cluster *c)
{
    int fds[CLUSTER_MAX_NODES * 3];
    int ports[CLUSTER_MAX_NODES * 3];
    int count = c->n * 3;
    int rv = 0;
    int opened = 0;
    for (; opened < count; opened++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rv = clusterErr(c, "socket(): %s", strerror(errno));
            break;
        }
        fds[opened] = fd;
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = 0 };
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof sin;
        if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
            getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
            rv = clusterErr(c, "bind(127.0.0.1:0): %s", strerror(errno));
            opened++;
            break;
        }
        ports[opened] = ntohs(sin.sin_port);
    }
    for (int k = 0; k < opened; k++) {
        close(fds[k]);
    }
    if (rv != 0) {
        return rv;
    }
    for (int i = 0; i < c->n; i++) {
        c->nodes[i].raft_port = ports[3 * i];
        c->nodes[i].rpc_port = ports[3 * i + 1];
        c->nodes[i].http_port = ports[3 * i + 2];
    }
    return 0;
}

/* ------------------------------------------------------------ processes */

static const char *clusterLogLevel(void)
{
    const char *level = getenv("TENURE_TEST_LOG_LEVEL");
    return level != NULL && *level != '\0' ? level : "info";
}

static int clusterSpawn(struct tn_cluster *c, int i)
{
    struct tn_cluster_node *node = &c->nodes[i];
    char id[16];
    char raft[32];
    char rpc[32];
    char http[32];
    snprintf(id, sizeof id, "%d", clusterNodeId(i));
    snprintf(raft, sizeof raft, "127.0.0.1:%d", node->raft_port);
    snprintf(rpc, sizeof rpc, "127.0.0.1:%d", node->rpc_port);
    snprintf(http, sizeof http, "127.0.0.1:%d", node->http_port);

    const char *argv[16 + CLUSTER_MAX_EXTRA_ARGS + 1];
    int k = 0;
    argv[k++] = c->tenured;
    argv[k++] = "--id";
    argv[k++] = id;
    argv[k++] = "--data";
    argv[k++] = node->data_dir;
    argv[k++] = "--raft";
    argv[k++] = raft;
    argv[k++] = "--rpc";
    argv[k++] = rpc;
    argv[k++] = "--http";
    argv[k++] = http;
    argv[k++] = "--initial-cluster";
    argv[k++] = c->initial_cluster;
    argv[k++] = "--log-level";
    argv[k++] = clusterLogLevel();
    for (int e = 0; c->extra_args[e] != NULL; e++) {
        argv[k++] = c->extra_args[e];
    }
    argv[k] = NULL;

    int log = open(node->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                   0644);
    if (log < 0) {
        return clusterErr(c, "open(%s): %s", node->log_path, strerror(errno));
    }
    char line[1024];
    int len = snprintf(line, sizeof line, "=== fixture: start #%d of node %d:",
                       node->starts + 1, clusterNodeId(i));
    for (int a = 0; a < k && len > 0 && (size_t)len < sizeof line; a++) {
        len += snprintf(line + len, sizeof line - (size_t)len, " %s", argv[a]);
    }
    if (len > 0 && (size_t)len < sizeof line - 1) {
        line[len++] = '\n';
        if (write(log, line, (size_t)len) < 0) {
            /* The log is only diagnostics. */
        }
    }

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(log);
        return clusterErr(c, "fork(): %s", strerror(errno));
    }
    if (pid == 0) {
        /* Child: async-signal-safe calls only. The daemon dies with the
         * test process, even when the test is killed by a timeout. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0) {
            dup2(null, STDIN_FILENO);
        }
        dup2(log, STDOUT_FILENO);
        dup2(log, STDERR_FILENO);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        execv(c->tenured, (char *const *)argv);
        static const char msg[] = "=== fixture: execv failed\n";
        if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
            _exit(127);
        }
        _exit(127);
    }
    close(log);
    node->pid = pid;
    node->starts++;
    node->exit_note[0] = '\0';
    node->exit_status = -1;
    return 0;
}

static void clusterDescribeStatus(char *buf, size_t n, int status)
{
    if (WIFEXITED(status)) {
        snprintf(buf, n, "exit status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    } else {
        snprintf(buf, n, "wait status 0x%x", (unsigned)status);
    }
}

bool clusterRunning(struct tn_cluster *c, int i)
{
    if (i < 0 || i >= c->n || c->nodes[i].pid <= 0) {
        return false;
    }
    struct tn_cluster_node *node = &c->nodes[i];
    int status;
    pid_t rv = waitpid(node->pid, &status, WNOHANG);
    if (rv == 0) {
        return true;
    }
    if (rv == node->pid) {
        char what[96];
        clusterDescribeStatus(what, sizeof what, status);
        snprintf(node->exit_note, sizeof node->exit_note,
                 "node %d (pid %d) exited on its own: %s", clusterNodeId(i),
                 (int)node->pid, what);
        fprintf(stderr, "cluster: %s\n", node->exit_note);
        node->exit_status = status;
        c->failed = true;
    }
    node->pid = 0;
    return false;
}

/* Waits up to TIMEOUT_MS for node I's process to end. Returns 1 and its
 * wait status in *STATUS when it ended, 0 on timeout. */
static int clusterReap(struct tn_cluster *c, int i, int timeout_ms, int *status)
{
    struct tn_cluster_node *node = &c->nodes[i];
    int64_t deadline = clusterNowMs() + timeout_ms;
    for (;;) {
        pid_t rv = waitpid(node->pid, status, WNOHANG);
        if (rv == node->pid || (rv < 0 && errno == ECHILD)) {
            if (rv < 0) {
                *status = 0;
            }
            node->pid = 0;
            return 1;
        }
        if (clusterNowMs() >= deadline) {
            return 0;
        }
        clusterSleepMs(10);
    }
}

int clusterKill(struct tn_cluster *c, int i)
{
    if (!clusterValidIndex(c, i)) {
        return -1;
    }
    if (!clusterRunning(c, i)) {
        return clusterErr(c, "kill: node %d is not running", clusterNodeId(i));
    }
    pid_t pid = c->nodes[i].pid;
    kill(pid, SIGKILL);
    int status;
    if (!clusterReap(c, i, CLUSTER_REAP_TIMEOUT_MS, &status)) {
        return clusterErr(c, "kill: node %d (pid %d) still there after %d ms",
                          clusterNodeId(i), (int)pid, CLUSTER_REAP_TIMEOUT_MS);
    }
    return 0;
}

int clusterStop(struct tn_cluster *c, int i)
{
    if (!clusterValidIndex(c, i)) {
        return -1;
    }
    if (!clusterRunning(c, i)) {
        return clusterErr(c, "stop: node %d is not running", clusterNodeId(i));
    }
    pid_t pid = c->nodes[i].pid;
    kill(pid, SIGTERM);
    int status;
    if (clusterReap(c, i, CLUSTER_STOP_TIMEOUT_MS, &status)) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            return 0;
        }
        char what[96];
        clusterDescribeStatus(what, sizeof what, status);
        return clusterErr(c, "stop: node %d (pid %d) ended with %s",
                          clusterNodeId(i), (int)pid, what);
    }
    kill(pid, SIGKILL);
    clusterReap(c, i, CLUSTER_REAP_TIMEOUT_MS, &status);
    return clusterErr(c,
                      "stop: node %d (pid %d) ignored SIGTERM for %d ms, "
                      "killed",
                      clusterNodeId(i), (int)pid, CLUSTER_STOP_TIMEOUT_MS);
}

static void clusterKillAll(struct tn_cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        if (c->nodes[i].pid > 0) {
            kill(c->nodes[i].pid, SIGKILL);
        }
    }
    for (int i = 0; i < c->n; i++) {
        int status;
        if (c->nodes[i].pid > 0) {
            clusterReap(c, i, CLUSTER_REAP_TIMEOUT_MS, &status);
        }
    }
}

/* ------------------------------------------------------------- probing */

int clusterWaitHealthy(struct tn_cluster *c, int i, int timeout_ms)
{
    if (!clusterValidIndex(c, i)) {
        return -1;
    }
    int64_t deadline = clusterNowMs() + timeout_ms;
    char last[256] = "no answer yet";
    for (;;) {
        if (!clusterRunning(c, i)) {
            return clusterErr(c, "node %d is not running (%s; %s)",
                              clusterNodeId(i), last,
                              c->nodes[i].exit_note[0] ? c->nodes[i].exit_note
                                                       : "not started");
        }
        struct http_response r;
        int status = httpRequestTimeout(c->nodes[i].http_port, "GET",
                                        "/healthz", NULL, NULL,
                                        CLUSTER_PROBE_TIMEOUT_MS, &r);
        if (status == 200) {
            httpResponseFree(&r);
            return 0;
        }
        if (status > 0) {
            snprintf(last, sizeof last, "GET /healthz: %d", status);
        } else {
            snprintf(last, sizeof last, "GET /healthz: %s", r.error);
        }
        httpResponseFree(&r);
        if (clusterNowMs() >= deadline) {
            return clusterErr(c, "node %d not healthy within %d ms (%s)",
                              clusterNodeId(i), timeout_ms, last);
        }
        clusterSleepMs(CLUSTER_POLL_MS);
    }
}

/* Minimal reader of top-level members of a JSON object: enough to pick
 * scalar fields out of GET /v1/cluster without a JSON library. */
static const char *clusterJsonWs(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
        p++;
    }
    return p;
}

/* P at an opening quote: returns the position after the closing quote. */
static const char *clusterJsonString(const char *p)
{
    for (p++; *p != '\0'; p++) {
        if (*p == '\\' && p[1] != '\0') {
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

static const char *clusterJsonSkip(const char *p)
{
    if (*p == '"') {
        return clusterJsonString(p);
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (*p != '\0') {
            if (*p == '"') {
                p = clusterJsonString(p);
                if (p == NULL) {
                    return NULL;
                }
                continue;
            }
            if (*p == '{' || *p == '[') {
                depth++;
            } else if (*p == '}' || *p == ']') {
                if (--depth == 0) {
                    return p + 1;
                }
            }
            p++;
        }
        return NULL;
    }
    while (*p != '\0' && *p != ',' && *p != '}' && *p != ']' && *p != ' ' &&
           *p != '\n' && *p != '\r' && *p != '\t') {
        p++;
    }
    return p;
}

/* Returns where the value of top-level member KEY starts, or NULL. */
static const char *clusterJsonMember(const char *text, const char *key)
{
    size_t key_len = strlen(key);
    const char *p = clusterJsonWs(text);
    if (*p != '{') {
        return NULL;
    }
    p = clusterJsonWs(p + 1);
    while (*p == '"') {
        const char *name = p + 1;
        const char *end = clusterJsonString(p);
        if (end == NULL) {
            return NULL;
        }
        size_t name_len = (size_t)(end - 1 - name);
        p = clusterJsonWs(end);
        if (*p != ':') {
            return NULL;
        }
        p = clusterJsonWs(p + 1);
        if (name_len == key_len && memcmp(name, key, key_len) == 0) {
            return p;
        }
        p = clusterJsonSkip(p);
        if (p == NULL) {
            return NULL;
        }
        p = clusterJsonWs(p);
        if (*p != ',') {
            return NULL;
        }
        p = clusterJsonWs(p + 1);
    }
    return NULL;
}

/* Integer member KEY (0 when absent, null or not a number). */
static long long clusterJsonInt(const char *text, const char *key)
{
    const char *v = clusterJsonMember(text, key);
    if (v == NULL || (*v != '-' && (*v < '0' || *v > '9'))) {
        return 0;
    }
    return strtoll(v, NULL, 10);
}

/* True when string member KEY equals VALUE. */
static bool clusterJsonStringIs(const char *text,
                                const char *key,
                                const char *value)
{
    const char *v = clusterJsonMember(text, key);
    size_t n = strlen(value);
    return v != NULL && *v == '"' && strncmp(v + 1, value, n) == 0 &&
           v[n + 1] == '"';
}

int clusterWaitLeader(struct tn_cluster *c, int timeout_ms)
{
    int64_t deadline = clusterNowMs() + timeout_ms;
    char seen[CLUSTER_MAX_NODES * 64];
    for (;;) {
        long long reported[CLUSTER_MAX_NODES] = { 0 };
        bool claims[CLUSTER_MAX_NODES] = { false };
        int running = 0;
        size_t off = 0;
        seen[0] = '\0';
        for (int i = 0; i < c->n; i++) {
            char what[64];
            if (!clusterRunning(c, i)) {
                snprintf(what, sizeof what, "down");
            } else {
                running++;
                struct http_response r;
                int status = httpRequestTimeout(
                    c->nodes[i].http_port, "GET", "/v1/cluster", NULL, NULL,
                    CLUSTER_PROBE_TIMEOUT_MS, &r);
                if (status == 200) {
                    reported[i] = clusterJsonInt(r.body, "leader_id");
                    bool says_leader =
                        clusterJsonMember(r.body, "state") == NULL ||
                        clusterJsonStringIs(r.body, "state", "leader");
                    claims[i] = says_leader &&
                                reported[i] == clusterNodeId(i);
                    snprintf(what, sizeof what, "leader_id=%lld%s",
                             reported[i], claims[i] ? " (self)" : "");
                } else if (status > 0) {
                    snprintf(what, sizeof what, "HTTP %d", status);
                } else {
                    snprintf(what, sizeof what, "%.50s", r.error);
                }
                httpResponseFree(&r);
            }
            int w = snprintf(seen + off, sizeof seen - off, "%snode %d: %s",
                             i ? "; " : "", clusterNodeId(i), what);
            if (w > 0 && off + (size_t)w < sizeof seen) {
                off += (size_t)w;
            }
        }
        for (int i = 0; i < c->n; i++) {
            if (!claims[i]) {
                continue;
            }
            int votes = 0;
            for (int k = 0; k < c->n; k++) {
                votes += reported[k] == clusterNodeId(i);
            }
            if (votes >= c->n / 2 + 1 && votes == running) {
                return i;
            }
        }
        if (clusterNowMs() >= deadline) {
            return clusterErr(c, "no leader within %d ms: %s", timeout_ms,
                              seen);
        }
        clusterSleepMs(CLUSTER_POLL_MS);
    }
}

int clusterWaitReady(struct tn_cluster *c, int timeout_ms)
{
    int64_t deadline = clusterNowMs() + timeout_ms;
    for (;;) {
        int not_ready = -1;
        char last[128] = "";
        for (int i = 0; i < c->n && not_ready < 0; i++) {
            if (!clusterRunning(c, i)) {
                continue;
            }
            struct http_response r;
            int status = httpRequestTimeout(c->nodes[i].http_port, "GET",
                                            "/readyz", NULL, NULL,
                                            CLUSTER_PROBE_TIMEOUT_MS, &r);
            if (status != 200) {
                not_ready = i;
                if (status > 0) {
                    snprintf(last, sizeof last, "HTTP %d", status);
                } else {
                    snprintf(last, sizeof last, "%.100s", r.error);
                }
            }
            httpResponseFree(&r);
        }
        if (not_ready < 0) {
            return 0;
        }
        if (clusterNowMs() >= deadline) {
            return clusterErr(c, "node %d not ready within %d ms (%s)",
                              clusterNodeId(not_ready), timeout_ms, last);
        }
        clusterSleepMs(CLUSTER_POLL_MS);
    }
}

/* ------------------------------------------------------------ lifecycle */

/* One attempt at starting the whole cluster. *RETRY tells whether a new
 * attempt with other ports may help (a node exited during start-up). */
static int clusterStartOnce(struct tn_cluster *c, bool *retry)
{
    *retry = false;
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0' || strlen(tmp) > 128) {
        tmp = "/tmp";
    }
    snprintf(c->root, sizeof c->root, "%s/tenure-test-XXXXXX", tmp);
    if (mkdtemp(c->root) == NULL) {
        int err = errno;
        c->root[0] = '\0';
        return clusterErr(c, "mkdtemp under %s: %s", tmp, strerror(err));
    }
    if (clusterPickPorts(c) != 0) {
        return -1;
    }
    size_t ic = 0;
    size_t ep = 0;
    for (int i = 0; i < c->n; i++) {
        struct tn_cluster_node *node = &c->nodes[i];
        int a = snprintf(node->data_dir, sizeof node->data_dir, "%s/n%d",
                         c->root, clusterNodeId(i));
        int b = snprintf(node->log_path, sizeof node->log_path, "%s/n%d.log",
                         c->root, clusterNodeId(i));
        if (a < 0 || b < 0 || (size_t)b >= sizeof node->log_path) {
            return clusterErr(c, "path too long under %s", c->root);
        }
        if (mkdir(node->data_dir, 0755) != 0) {
            return clusterErr(c, "mkdir(%s): %s", node->data_dir,
                              strerror(errno));
        }
        ic += (size_t)snprintf(c->initial_cluster + ic,
                               sizeof c->initial_cluster - ic,
                               "%s%d=127.0.0.1:%d", i ? "," : "",
                               clusterNodeId(i), node->raft_port);
        ep += (size_t)snprintf(c->rpc_endpoints + ep,
                               sizeof c->rpc_endpoints - ep, "%s127.0.0.1:%d",
                               i ? "," : "", node->rpc_port);
    }
    for (int i = 0; i < c->n; i++) {
        if (clusterSpawn(c, i) != 0) {
            return -1;
        }
    }
    int64_t deadline = clusterNowMs() + CLUSTER_START_TIMEOUT_MS;
    for (int i = 0; i < c->n; i++) {
        int left = (int)(deadline - clusterNowMs());
        if (clusterWaitHealthy(c, i, left > 0 ? left : 1) != 0) {
            /* Exited with an error (not a crash): maybe a port clash. */
            int st = c->nodes[i].exit_status;
            *retry = c->nodes[i].pid == 0 && st != -1 && WIFEXITED(st) &&
                     WEXITSTATUS(st) != 0;
            return -1;
        }
    }
    return 0;
}

int clusterStartWith(struct tn_cluster *c,
                     int n_nodes,
                     const char *const *extra_args)
{
    memset(c, 0, sizeof *c);
    if (n_nodes < 1 || n_nodes > CLUSTER_MAX_NODES) {
        return clusterErr(c, "clusterStart: %d nodes (1..%d)", n_nodes,
                          CLUSTER_MAX_NODES);
    }
    for (int e = 0; extra_args != NULL && extra_args[e] != NULL; e++) {
        if (e == CLUSTER_MAX_EXTRA_ARGS) {
            return clusterErr(c, "clusterStart: more than %d extra args",
                              CLUSTER_MAX_EXTRA_ARGS);
        }
        c->extra_args[e] = extra_args[e];
    }
    /* Default: the directory of the test binary, which is the build dir. */
    char self[CLUSTER_PATH_SIZE] = "build";
    const char *bin = getenv("TENURE_BIN_DIR");
    if (bin == NULL || *bin == '\0') {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n > 0) {
            self[n] = '\0';
            char *slash = strrchr(self, '/');
            if (slash != NULL) {
                *slash = '\0';
            }
        } else {
            snprintf(self, sizeof self, "build");
        }
        bin = self;
    }
    int len = snprintf(c->tenured, sizeof c->tenured, "%s/tenured", bin);
    if (len < 0 || (size_t)len >= sizeof c->tenured) {
        return clusterErr(c, "TENURE_BIN_DIR too long");
    }
    if (access(c->tenured, X_OK) != 0) {
        return clusterErr(c, "%s: %s (set TENURE_BIN_DIR to the build dir)",
                          c->tenured, strerror(errno));
    }

    for (int attempt = 1;; attempt++) {
        c->n = n_nodes;
        bool retry;
        if (clusterStartOnce(c, &retry) == 0) {
            c->failed = false;
            c->errmsg[0] = '\0';
            return 0;
        }
        if (!retry || attempt == CLUSTER_START_ATTEMPTS) {
            return -1;
        }
        fprintf(stderr,
                "cluster: start attempt %d failed (%s); retrying with new "
                "ports\n",
                attempt, c->errmsg);
        clusterKillAll(c);
        clusterDumpLogs(c, 10);
        clusterRemoveTree(c->root);
        c->root[0] = '\0';
        for (int i = 0; i < c->n; i++) {
            c->nodes[i].starts = 0;
        }
    }
}

int clusterStart(struct tn_cluster *c, int n_nodes)
{
    return clusterStartWith(c, n_nodes, NULL);
}

int clusterRestart(struct tn_cluster *c, int i)
{
    if (!clusterValidIndex(c, i)) {
        return -1;
    }
    if (clusterRunning(c, i) && clusterStop(c, i) != 0) {
        /* Stopped anyway (killed after the grace period); go on. */
        fprintf(stderr, "cluster: restart: %s\n", c->errmsg);
    }
    if (clusterSpawn(c, i) != 0) {
        return -1;
    }
    return clusterWaitHealthy(c, i, CLUSTER_START_TIMEOUT_MS);
}

const char *clusterRpcEndpoints(const struct tn_cluster *c)
{
    return c->rpc_endpoints;
}

int clusterHttpPort(const struct tn_cluster *c, int i)
{
    return i >= 0 && i < c->n ? c->nodes[i].http_port : -1;
}

int clusterRpcPort(const struct tn_cluster *c, int i)
{
    return i >= 0 && i < c->n ? c->nodes[i].rpc_port : -1;
}

int clusterRaftPort(const struct tn_cluster *c, int i)
{
    return i >= 0 && i < c->n ? c->nodes[i].raft_port : -1;
}

void clusterPassed(struct tn_cluster *c)
{
    c->passed = true;
}

void clusterFailed(struct tn_cluster *c)
{
    c->failed = true;
}

void clusterDestroy(struct tn_cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        clusterRunning(c, i); /* notes nodes that died on their own */
    }
    clusterKillAll(c);
    const char *dump = getenv("TENURE_DUMP_LOGS");
    bool force = dump != NULL && *dump != '\0' && strcmp(dump, "0") != 0;
    if (c->n > 0 && c->root[0] != '\0' && (c->failed || !c->passed || force)) {
        fprintf(stderr, "===== cluster in %s%s%s =====\n", c->root,
                c->errmsg[0] ? ": " : "", c->errmsg);
        clusterDumpLogs(c, CLUSTER_DUMP_LINES);
    }
    if (c->root[0] != '\0') {
        const char *keep = getenv("TENURE_KEEP_CLUSTER");
        if (keep != NULL && *keep != '\0' && strcmp(keep, "0") != 0) {
            fprintf(stderr, "cluster: kept %s\n", c->root);
        } else {
            clusterRemoveTree(c->root);
        }
    }
    c->n = 0;
    c->root[0] = '\0';
}

char *clusterReadFile(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t len = 0;
    if (f == NULL) {
        return NULL;
    }
    for (;;) {
        char chunk[8192];
        size_t n = fread(chunk, 1, sizeof chunk, f);
        char *grown;
        if (n == 0) {
            break;
        }
        grown = realloc(buf, len + n + 1);
        if (grown == NULL) {
            break;
        }
        buf = grown;
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (buf == NULL) {
        buf = calloc(1, 1);
    } else {
        buf[len] = '\0';
    }
    return buf;
}

bool clusterFileContains(const char *path, const char *needle)
{
    char *text = clusterReadFile(path);
    bool found = text != NULL && strstr(text, needle) != NULL;
    free(text);
    return found;
}
