/* Issue 8's acceptance tests, on real tenured processes on 127.0.0.1:
 * operating a cluster. Each test starts its own cluster.
 *
 *   config errors     tenured run directly: unknown key (file:line), bad
 *                     values (the key), join + initial-cluster, exit 2 and
 *                     nothing created; a good file with flags overriding
 *                     it, --log-file and SIGHUP reopen, SIGTERM exit 0
 *   grow and shrink   3 -> 5 (two --join nodes, tn_member_add and tenurectl
 *                     cluster add; a second change while one is in progress
 *                     is REFUSED) -> 3 (tn_member_remove, tenurectl cluster
 *                     remove; removing the leader is REFUSED) under client
 *                     load; then the 3 left keep a quorum of 2
 *   replace           kill -9 a follower, remove it, add a fresh node with
 *                     a new id and an empty data dir: it serves the same
 *                     lock state on consistency=stale reads and votes;
 *                     removing it again while another voter is down is
 *                     REFUSED (would lose quorum)
 *   transfer          leadership moved 6 times under load (library and
 *                     ctl with an id, ctl without): the asked-for node
 *                     leads; a transfer to a non-member is refused
 *   SIGTERM           of the leader under load: exit 0, leadership handed
 *                     over, the cluster keeps serving
 *   snapshot          save from a running cluster, restore into a fresh
 *                     one: identical GET /v1/locks?prefix= (tokens
 *                     included), larger tokens afterwards, a second restore
 *                     refused
 *   disk guard        a node below --min-free-disk: 507 naming it /
 *                     NO_SPACE, release still works; a low follower stops
 *                     writes cluster-wide, a low leader hands over, the
 *                     alarm clears when the node is back to normal
 *
 * Under load, worker threads acquire and release locks through libtenure
 * with their own sessions. The library retries NOT_LEADER, NO_QUORUM and
 * COMMIT_UNKNOWN; the caller must see none of them: every call a worker
 * makes must return OK. At the end every lock a worker was told it holds
 * must be listed with its token, and no released one.
 *
 * Every wait is bounded (the machine is shared, so the bounds are wide).
 * Worker threads never assert: they record, the main thread checks.
 * TENURE_TEST_FILTER (a cmocka pattern, e.g. "*transfer*") runs a subset. */
#define _GNU_SOURCE
#include "lib/test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/cluster.h"
#include "lib/http.h"
#include "tenure.h"

#define PATH_SIZE       512
#define MAX_XNODES      4
#define LOAD_WORKERS    3
#define LOAD_KEEP       3     /* locks a worker holds at once */
#define LOAD_MAX_K      50000 /* acquires per worker, at most */
#define LOAD_PAUSE_MS   5     /* between two operations of a worker */
#define LOAD_NOTES      4     /* failures remembered per worker */
#define CALL_TIMEOUT_MS 15000
#define HUGE_FREE_DISK  "9223372036854775807"

/* A daemon started by this file, not by the fixture: --join nodes and the
 * config test's node. */
struct xnode
{
    uint64_t id;
    int raft_port;
    int rpc_port;
    int http_port;
    pid_t pid; /* > 0 while running */
    char raft[32];
    char rpc[32];
    char http[32];
    char data_dir[PATH_SIZE];
    char log_path[PATH_SIZE];
};

struct worker
{
    struct load *load;
    int id;
    tn_session *s;
    pthread_t thread;
    bool started;
    int acquires; /* acquires that returned OK */
    int releases; /* releases that returned OK */
    int failures; /* calls that returned anything else */
    char notes[LOAD_NOTES][240];
    int64_t max_call_ms; /* slowest call */
    uint64_t last_token;
    unsigned char *st; /* per k: K_* below */
    struct
    {
        int k;
        uint64_t token;
        tn_lock *l;
    } held[LOAD_KEEP]; /* oldest first */
    int n_held;
};

enum { K_NONE, K_HELD, K_RELEASED, K_ACQUIRE_FAILED, K_RELEASE_FAILED };

struct load
{
    tn_client *client;
    char prefix[32];
    int stop; /* atomic */
    bool running;
    struct worker w[LOAD_WORKERS];
};

struct fixture
{
    struct tn_cluster cluster;
    struct tn_cluster cluster2; /* the restore target */
    struct xnode xnodes[MAX_XNODES];
    int n_xnodes;
    struct load load;
    tn_client *admin;
    tn_client *admin2;
    char bin_dir[256];
    char tenured[PATH_SIZE];
    char tenurectl[PATH_SIZE];
    char tmp[256];
};

/* ------------------------------------------------------------- helpers */

static int64_t nowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleepMs(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void writeFile(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
        fail_msg("cannot write %s: %s", path, strerror(errno));
    }
}

static void dumpTail(const char *title, const char *path, int lines)
{
    char *text = clusterReadFile(path);
    size_t len;
    size_t from;
    int seen = 0;
    fprintf(stderr, "----- %s: last %d lines of %s -----\n", title, lines,
            path);
    if (text == NULL) {
        fprintf(stderr, "(no log)\n");
        return;
    }
    len = strlen(text);
    from = len;
    if (from > 0 && text[from - 1] == '\n') {
        from--;
    }
    while (from > 0) {
        if (text[from - 1] == '\n' && ++seen == lines) {
            break;
        }
        from--;
    }
    fputs(text + from, stderr);
    if (len > 0 && text[len - 1] != '\n') {
        fputc('\n', stderr);
    }
    free(text);
}

/* N distinct free ports on 127.0.0.1 (held together while picked). */
static void pickPorts(int *ports, int n)
{
    int fds[8];
    assert_true(n <= 8);
    for (int i = 0; i < n; i++) {
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = 0 };
        socklen_t len = sizeof sin;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds[i] < 0 ||
            bind(fds[i], (struct sockaddr *)&sin, sizeof sin) != 0 ||
            getsockname(fds[i], (struct sockaddr *)&sin, &len) != 0) {
            fail_msg("picking a port: %s", strerror(errno));
        }
        ports[i] = ntohs(sin.sin_port);
    }
    for (int i = 0; i < n; i++) {
        close(fds[i]);
    }
}

/* --------------------------------------------------------- processes */

struct proc_result
{
    int status; /* exit code; 128 + signal; -2 timed out (killed) */
    char out[8192];
    char err[8192];
};

/* Runs ARGV (argv[0] a path) with stdin from /dev/null, collects stdout and
 * stderr, kills it after TIMEOUT_MS. */
static void runProc(const char *const *argv,
                    int timeout_ms,
                    struct proc_result *r)
{
    int po[2];
    int pe[2];
    size_t no = 0;
    size_t ne = 0;
    bool open_o = true;
    bool open_e = true;
    int64_t deadline = nowMs() + timeout_ms;
    int status = 0;
    pid_t pid;

    memset(r, 0, sizeof *r);
    if (pipe2(po, O_CLOEXEC) != 0 || pipe2(pe, O_CLOEXEC) != 0) {
        fail_msg("pipe: %s", strerror(errno));
    }
    pid = fork();
    if (pid < 0) {
        fail_msg("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (null >= 0) {
            dup2(null, 0);
        }
        dup2(po[1], 1);
        dup2(pe[1], 2);
        execv(argv[0], (char *const *)argv);
        _exit(126);
    }
    close(po[1]);
    close(pe[1]);
    while (open_o || open_e) {
        struct pollfd p[2];
        int np = 0;
        int left = (int)(deadline - nowMs());
        if (left <= 0) {
            break;
        }
        if (open_o) {
            p[np++] = (struct pollfd){ .fd = po[0], .events = POLLIN };
        }
        if (open_e) {
            p[np++] = (struct pollfd){ .fd = pe[0], .events = POLLIN };
        }
        if (poll(p, (nfds_t)np, left) < 0 && errno != EINTR) {
            break;
        }
        for (int i = 0; i < np; i++) {
            bool is_o = p[i].fd == po[0];
            char *buf = is_o ? r->out : r->err;
            size_t *n = is_o ? &no : &ne;
            char sink[4096];
            ssize_t got;
            if (p[i].revents == 0) {
                continue;
            }
            if (*n < sizeof r->out - 1) {
                got = read(p[i].fd, buf + *n, sizeof r->out - 1 - *n);
            } else {
                got = read(p[i].fd, sink, sizeof sink);
                if (got > 0) {
                    continue;
                }
            }
            if (got > 0) {
                *n += (size_t)got;
            } else if (got == 0 || errno != EINTR) {
                if (is_o) {
                    open_o = false;
                } else {
                    open_e = false;
                }
            }
        }
    }
    close(po[0]);
    close(pe[0]);
    r->out[no] = '\0';
    r->err[ne] = '\0';
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            break;
        }
        if (w < 0 && errno != EINTR) {
            r->status = -1;
            return;
        }
        if (nowMs() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            r->status = -2;
            return;
        }
        sleepMs(10);
    }
    if (WIFEXITED(status)) {
        r->status = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        r->status = 128 + WTERMSIG(status);
    } else {
        r->status = -1;
    }
}

/* tenurectl --endpoints EP --timeout CALL_TIMEOUT_MS ARGS... */
static void runCtl(struct fixture *f,
                   const char *endpoints,
                   const char *const *args,
                   struct proc_result *r)
{
    const char *argv[24];
    char timeout[16];
    int n = 0;
    snprintf(timeout, sizeof timeout, "%d", CALL_TIMEOUT_MS);
    argv[n++] = f->tenurectl;
    argv[n++] = "--endpoints";
    argv[n++] = endpoints;
    argv[n++] = "--timeout";
    argv[n++] = timeout;
    for (int i = 0; args[i] != NULL && n < 23; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    runProc(argv, CALL_TIMEOUT_MS + 10000, r);
}

#define CTL(f, ep, r, ...) \
    runCtl(f, ep, (const char *const[]){ __VA_ARGS__, NULL }, r)

/* Runs tenured with ARGS (after argv[0]) to its end; for option errors. */
static void runTenured(struct fixture *f,
                       const char *const *args,
                       struct proc_result *r)
{
    const char *argv[40];
    int n = 0;
    argv[n++] = f->tenured;
    for (int i = 0; args[i] != NULL && n < 39; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    runProc(argv, 10000, r);
}

#define TENURED(f, r, ...) \
    runTenured(f, (const char *const[]){ __VA_ARGS__, NULL }, r)

/* Starts a daemon in the background, stdout and stderr appended to LOG. */
static pid_t spawnDaemon(const char *const *argv, const char *log)
{
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_t pid;
    if (fd < 0) {
        fail_msg("open %s: %s", log, strerror(errno));
    }
    pid = fork();
    if (pid < 0) {
        fail_msg("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (null >= 0) {
            dup2(null, 0);
        }
        dup2(fd, 1);
        dup2(fd, 2);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fd);
    return pid;
}

/* Waits up to TIMEOUT_MS for PID to end: 1 and its wait status, or 0. */
static int reap(pid_t pid, int timeout_ms, int *status)
{
    int64_t deadline = nowMs() + timeout_ms;
    for (;;) {
        pid_t w = waitpid(pid, status, WNOHANG);
        if (w == pid) {
            return 1;
        }
        if (w < 0 && errno != EINTR) {
            *status = -1;
            return 1;
        }
        if (nowMs() >= deadline) {
            return 0;
        }
        sleepMs(10);
    }
}

static void describeStatus(char *buf, size_t n, int status)
{
    if (status == -1) {
        snprintf(buf, n, "unknown status");
    } else if (WIFEXITED(status)) {
        snprintf(buf, n, "exit status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(buf, n, "signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    } else {
        snprintf(buf, n, "wait status 0x%x", (unsigned)status);
    }
}

/* ------------------------------------------------------------- HTTP */

/* One request; the body parsed as JSON into *OUT when it is JSON (else
 * NULL). Returns the status, or -1 (RAW gets the reason). */
static int httpJson(int port,
                    const char *method,
                    const char *path,
                    const char *headers,
                    const char *body,
                    json_t **out,
                    struct http_response *keep)
{
    struct http_response r;
    int status =
        httpRequestTimeout(port, method, path, headers, body, 10000, &r);
    if (out != NULL) {
        *out = status > 0 && r.body != NULL && r.body_len > 0
                   ? json_loads(r.body, 0, NULL)
                   : NULL;
    }
    if (keep != NULL) {
        *keep = r;
    } else {
        httpResponseFree(&r);
    }
    return status;
}

/* The list document of GET /v1/locks?prefix=P on PORT, with what depends
 * on when and where it is read taken out (the answer's index and each
 * holder's expires_in_ms), as canonical JSON text (malloc'd). NULL when
 * the request failed; *STATUS gets the HTTP status. */
static char *lockList(int port, const char *prefix, bool stale, int *status)
{
    char path[256];
    json_t *j;
    json_t *locks;
    size_t i;
    json_t *lock;
    char *text;

    snprintf(path, sizeof path, "/v1/locks?prefix=%s&limit=1000%s", prefix,
             stale ? "&consistency=stale" : "");
    *status = httpJson(port, "GET", path, NULL, NULL, &j, NULL);
    if (*status != 200 || j == NULL) {
        json_decref(j);
        return NULL;
    }
    json_object_del(j, "index");
    locks = json_object_get(j, "locks");
    json_array_foreach (locks, i, lock) {
        size_t h;
        json_t *holder;
        json_array_foreach (json_object_get(lock, "holders"), h, holder) {
            json_object_del(holder, "expires_in_ms");
        }
    }
    text = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(j);
    return text;
}

/* PUT /v1/locks/RESOURCE for a one-lock shim session; returns the status
 * and the token (ETag) in *TOKEN when 201. */
static int httpAcquire(int port,
                       const char *resource,
                       const char *holder,
                       uint64_t *token,
                       struct http_response *keep)
{
    char path[300];
    char body[256];
    struct http_response r;
    int status;
    snprintf(path, sizeof path, "/v1/locks/%s", resource);
    snprintf(body, sizeof body, "{\"holder\":\"%s\",\"ttl_ms\":60000}", holder);
    status = httpRequestTimeout(port, "PUT", path, NULL, body, 10000, &r);
    if (token != NULL) {
        *token = 0;
        if (status == 201 && httpETagToken(&r, token) != 0) {
            *token = 0;
        }
    }
    if (keep != NULL) {
        *keep = r;
    } else {
        httpResponseFree(&r);
    }
    return status;
}

static int httpRelease(int port, const char *resource, uint64_t token)
{
    char path[300];
    char hdr[64];
    struct http_response r;
    int status;
    snprintf(path, sizeof path, "/v1/locks/%s", resource);
    snprintf(hdr, sizeof hdr, "If-Match: \"%" PRIu64 "\"", token);
    status = httpRequestTimeout(port, "DELETE", path, hdr, NULL, 10000, &r);
    httpResponseFree(&r);
    return status;
}

/* The leader the fixture's running nodes agree on (index), or -1. */
static int agreedLeader(struct tn_cluster *c)
{
    long long seen = -1;
    int claim = -1;
    for (int i = 0; i < c->n; i++) {
        json_t *j;
        long long id;
        if (!clusterRunning(c, i)) {
            continue;
        }
        if (httpJson(clusterHttpPort(c, i), "GET", "/v1/cluster", NULL, NULL,
                     &j, NULL) != 200 ||
            j == NULL) {
            json_decref(j);
            return -1;
        }
        id = json_integer_value(json_object_get(j, "leader_id"));
        if (id == clusterNodeId(i) &&
            strcmp(json_string_value(json_object_get(j, "state")) ?: "",
                   "leader") == 0) {
            claim = i;
        }
        json_decref(j);
        if (id <= 0 || (seen != -1 && id != seen)) {
            return -1;
        }
        seen = id;
    }
    return claim >= 0 && seen == clusterNodeId(claim) ? claim : -1;
}

/* Waits until the running nodes agree on a leader for which OK(i) holds. */
static int waitLeaderWhere(struct tn_cluster *c,
                           int timeout_ms,
                           bool (*ok)(int i, int arg),
                           int arg,
                           const char *what)
{
    int64_t deadline = nowMs() + timeout_ms;
    int last = -1;
    for (;;) {
        last = agreedLeader(c);
        if (last >= 0 && ok(last, arg)) {
            return last;
        }
        if (nowMs() >= deadline) {
            fail_msg("no leader %s within %d ms (last agreed: %s%d)", what,
                     timeout_ms, last >= 0 ? "node " : "",
                     last >= 0 ? clusterNodeId(last) : -1);
        }
        sleepMs(50);
    }
}

static bool leaderIs(int i, int arg)
{
    return i == arg;
}

static bool leaderIsNot(int i, int arg)
{
    return i != arg;
}

static bool anyLeader(int i, int arg)
{
    (void)i;
    (void)arg;
    return true;
}

/* --------------------------------------------------------- libtenure */

static tn_client *openClient(const char *endpoints)
{
    struct tn_client_opts o;
    tn_client *c = NULL;
    char msg[TN_ERRMSG_BUF_SIZE] = "";
    memset(&o, 0, sizeof o);
    o.timeout_ms = CALL_TIMEOUT_MS;
    if (tn_client_open2(endpoints, &o, &c, msg) != TN_OK) {
        fail_msg("tn_client_open(%s): %s", endpoints, msg);
    }
    return c;
}

static const char *errmsg(tn_client *c)
{
    static __thread char buf[TN_ERRMSG_BUF_SIZE];
    tn_client_errmsg_copy(c, buf, sizeof buf);
    return buf;
}

static tn_session *openSession(tn_client *c, const char *holder)
{
    tn_session *s = NULL;
    int rc = tn_session_open(c, holder, 60000, NULL, &s);
    if (rc != TN_OK) {
        fail_msg("tn_session_open(%s): %s (%s)", holder, tn_errname(rc),
                 errmsg(c));
    }
    return s;
}

static tn_lock *mustAcquire(tn_session *s,
                            const char *resource,
                            const struct tn_acquire_opts *o)
{
    tn_lock *l = NULL;
    int rc = tn_lock_acquire(s, resource, o, &l);
    if (rc != TN_OK) {
        fail_msg("acquire %s: %s (%s)", resource, tn_errname(rc),
                 errmsg(tn_session_client(s)));
    }
    return l;
}

static void describeView(const struct tn_cluster_info *ci, char *buf, size_t n)
{
    size_t off = 0;
    int w = snprintf(buf, n, "node %" PRIu64 " says leader=%" PRIu64 ":",
                     ci->node_id, ci->leader_id);
    off = w > 0 ? (size_t)w : 0;
    for (size_t i = 0; i < ci->n_members && off < n; i++) {
        w = snprintf(buf + off, n - off, " %" PRIu64 "(%s)", ci->members[i].id,
                     ci->members[i].role);
        if (w > 0) {
            off += (size_t)w;
        }
    }
}

/* Waits until the cluster (as the node C's client asks sees it) has a
 * leader and exactly the members IDS, all voters. Returns the leader id. */
static uint64_t waitMembers(tn_client *c,
                            const uint64_t *ids,
                            int n,
                            int timeout_ms)
{
    int64_t deadline = nowMs() + timeout_ms;
    char last[512] = "no answer";
    for (;;) {
        struct tn_cluster_info ci;
        int rc = tn_cluster_status(c, &ci);
        if (rc == TN_OK) {
            bool ok = ci.leader_id != 0 && ci.n_members == (size_t)n;
            for (int k = 0; ok && k < n; k++) {
                bool found = false;
                for (size_t i = 0; i < ci.n_members; i++) {
                    if (ci.members[i].id == ids[k] &&
                        strcmp(ci.members[i].role, "voter") == 0) {
                        found = true;
                    }
                }
                ok = found;
            }
            describeView(&ci, last, sizeof last);
            if (ok) {
                uint64_t leader = ci.leader_id;
                tn_cluster_info_clear(&ci);
                return leader;
            }
            tn_cluster_info_clear(&ci);
        } else {
            snprintf(last, sizeof last, "cluster status: %s (%s)",
                     tn_errname(rc), errmsg(c));
        }
        if (nowMs() >= deadline) {
            fail_msg("members not as expected (%d voters) within %d ms: %s", n,
                     timeout_ms, last);
        }
        sleepMs(100);
    }
}

/* The role of member ID as the cluster sees it now ("" if absent). */
static void memberRole(tn_client *c, uint64_t id, char *role, size_t n)
{
    struct tn_cluster_info ci;
    role[0] = '\0';
    if (tn_cluster_status(c, &ci) != TN_OK) {
        return;
    }
    for (size_t i = 0; i < ci.n_members; i++) {
        if (ci.members[i].id == id) {
            snprintf(role, n, "%s", ci.members[i].role);
        }
    }
    tn_cluster_info_clear(&ci);
}

/* ------------------------------------------------------------ xnodes */

static struct xnode *xnodePrepare(struct fixture *f, uint64_t id)
{
    struct xnode *x;
    int ports[3];
    assert_true(f->n_xnodes < MAX_XNODES);
    x = &f->xnodes[f->n_xnodes++];
    memset(x, 0, sizeof *x);
    x->id = id;
    pickPorts(ports, 3);
    x->raft_port = ports[0];
    x->rpc_port = ports[1];
    x->http_port = ports[2];
    snprintf(x->raft, sizeof x->raft, "127.0.0.1:%d", x->raft_port);
    snprintf(x->rpc, sizeof x->rpc, "127.0.0.1:%d", x->rpc_port);
    snprintf(x->http, sizeof x->http, "127.0.0.1:%d", x->http_port);
    snprintf(x->data_dir, sizeof x->data_dir, "%s/x%" PRIu64, f->tmp, id);
    snprintf(x->log_path, sizeof x->log_path, "%s/x%" PRIu64 ".log", f->tmp,
             id);
    if (mkdir(x->data_dir, 0700) != 0) {
        fail_msg("mkdir %s: %s", x->data_dir, strerror(errno));
    }
    return x;
}

static bool xnodeRunning(struct xnode *x)
{
    int status;
    if (x->pid <= 0) {
        return false;
    }
    if (waitpid(x->pid, &status, WNOHANG) == x->pid) {
        char what[96];
        describeStatus(what, sizeof what, status);
        fprintf(stderr, "node %" PRIu64 " (pid %d) ended on its own: %s\n",
                x->id, (int)x->pid, what);
        x->pid = 0;
        return false;
    }
    return true;
}

/* Starts X empty with --join and waits for its /healthz. */
static void xnodeStartJoin(struct fixture *f, struct xnode *x)
{
    char id[24];
    const char *argv[20];
    int n = 0;
    int64_t deadline;
    snprintf(id, sizeof id, "%" PRIu64, x->id);
    argv[n++] = f->tenured;
    argv[n++] = "--id";
    argv[n++] = id;
    argv[n++] = "--data";
    argv[n++] = x->data_dir;
    argv[n++] = "--raft";
    argv[n++] = x->raft;
    argv[n++] = "--rpc";
    argv[n++] = x->rpc;
    argv[n++] = "--http";
    argv[n++] = x->http;
    argv[n++] = "--join";
    argv[n++] = "--log-level";
    argv[n++] = "info";
    argv[n] = NULL;
    x->pid = spawnDaemon(argv, x->log_path);
    deadline = nowMs() + 20000;
    for (;;) {
        struct http_response r;
        int status;
        if (!xnodeRunning(x)) {
            dumpTail("joining node", x->log_path, 20);
            fail_msg("node %" PRIu64 " (--join) exited during start-up", x->id);
        }
        status = httpRequestTimeout(x->http_port, "GET", "/healthz", NULL, NULL,
                                    1000, &r);
        httpResponseFree(&r);
        if (status == 200) {
            return;
        }
        if (nowMs() >= deadline) {
            fail_msg("node %" PRIu64 " (--join) not healthy within 20 s",
                     x->id);
        }
        sleepMs(50);
    }
}

static void xnodeKill(struct xnode *x)
{
    int status;
    if (x->pid > 0) {
        kill(x->pid, SIGKILL);
        reap(x->pid, 5000, &status);
        x->pid = 0;
    }
}

/* -------------------------------------------------------------- load */

static void note(struct worker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void note(struct worker *w, const char *fmt, ...)
{
    va_list ap;
    if (w->failures < LOAD_NOTES) {
        va_start(ap, fmt);
        vsnprintf(w->notes[w->failures], sizeof w->notes[0], fmt, ap);
        va_end(ap);
    }
    w->failures++;
}

static void *workerMain(void *arg)
{
    struct worker *w = arg;
    struct load *load = w->load;
    tn_client *c = load->client;
    int k = 0;

    while (!__atomic_load_n(&load->stop, __ATOMIC_ACQUIRE) && k < LOAD_MAX_K) {
        char res[64];
        tn_lock *l = NULL;
        int64_t t0 = nowMs();
        int64_t took;
        int rc;

        snprintf(res, sizeof res, "%s/%d/%d", load->prefix, w->id, k);
        rc = tn_lock_acquire(w->s, res, NULL, &l);
        took = nowMs() - t0;
        if (took > w->max_call_ms) {
            w->max_call_ms = took;
        }
        if (rc != TN_OK) {
            w->st[k] = K_ACQUIRE_FAILED;
            note(w, "acquire %s: %s (%s) after %" PRId64 " ms", res,
                 tn_errname(rc), errmsg(c), took);
            k++;
            sleepMs(100);
            continue;
        }
        if (tn_lock_token(l) <= w->last_token) {
            note(w, "acquire %s: token %" PRIu64 " not above %" PRIu64, res,
                 tn_lock_token(l), w->last_token);
        }
        w->last_token = tn_lock_token(l);
        w->acquires++;
        w->st[k] = K_HELD;
        w->held[w->n_held].k = k;
        w->held[w->n_held].token = tn_lock_token(l);
        w->held[w->n_held].l = l;
        w->n_held++;
        k++;
        if (w->n_held == LOAD_KEEP) {
            /* Give back the oldest. */
            tn_lock *old = w->held[0].l;
            int old_k = w->held[0].k;
            t0 = nowMs();
            rc = tn_lock_release(old);
            took = nowMs() - t0;
            if (took > w->max_call_ms) {
                w->max_call_ms = took;
            }
            if (rc == TN_OK) {
                w->st[old_k] = K_RELEASED;
                w->releases++;
            } else {
                w->st[old_k] = K_RELEASE_FAILED;
                note(w, "release %s/%d/%d: %s (%s) after %" PRId64 " ms",
                     load->prefix, w->id, old_k, tn_errname(rc), errmsg(c),
                     took);
            }
            tn_lock_free(old);
            memmove(&w->held[0], &w->held[1],
                    sizeof w->held[0] * (LOAD_KEEP - 1));
            w->n_held--;
        }
        sleepMs(LOAD_PAUSE_MS);
    }
    return NULL;
}

static void loadStart(struct fixture *f,
                      const char *endpoints,
                      const char *prefix)
{
    struct load *load = &f->load;
    memset(load, 0, sizeof *load);
    load->client = openClient(endpoints);
    snprintf(load->prefix, sizeof load->prefix, "%s", prefix);
    for (int i = 0; i < LOAD_WORKERS; i++) {
        struct worker *w = &load->w[i];
        char holder[64];
        w->load = load;
        w->id = i;
        w->st = calloc(LOAD_MAX_K, 1);
        assert_non_null(w->st);
        snprintf(holder, sizeof holder, "%s-worker-%d", prefix, i);
        w->s = openSession(load->client, holder);
    }
    load->running = true;
    for (int i = 0; i < LOAD_WORKERS; i++) {
        assert_int_equal(
            pthread_create(&load->w[i].thread, NULL, workerMain, &load->w[i]),
            0);
        load->w[i].started = true;
    }
}

static int loadOps(struct load *load)
{
    int n = 0;
    for (int i = 0; i < LOAD_WORKERS; i++) {
        n += __atomic_load_n(&load->w[i].acquires, __ATOMIC_RELAXED) +
             __atomic_load_n(&load->w[i].releases, __ATOMIC_RELAXED);
    }
    return n;
}

static int loadFailures(struct load *load)
{
    int n = 0;
    for (int i = 0; i < LOAD_WORKERS; i++) {
        n += __atomic_load_n(&load->w[i].failures, __ATOMIC_RELAXED);
    }
    return n;
}

/* Waits until the workers completed MORE successful calls (bounded). */
static void loadProgress(struct fixture *f,
                         int more,
                         int timeout_ms,
                         const char *when)
{
    int from = loadOps(&f->load);
    int64_t deadline = nowMs() + timeout_ms;
    while (loadOps(&f->load) < from + more) {
        if (nowMs() >= deadline) {
            fail_msg(
                "load: only %d of %d more calls succeeded within %d ms "
                "%s (%d failures so far)",
                loadOps(&f->load) - from, more, timeout_ms, when,
                loadFailures(&f->load));
        }
        sleepMs(20);
    }
}

static void loadJoin(struct load *load)
{
    __atomic_store_n(&load->stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < LOAD_WORKERS; i++) {
        if (load->w[i].started) {
            pthread_join(load->w[i].thread, NULL);
            load->w[i].started = false;
        }
    }
}

/* Stops the workers and checks: no call failed; every lock a worker was
 * told it holds is listed with its token; no released lock is listed.
 * Then releases what is held and closes the sessions. */
static void loadStopAndCheck(struct fixture *f)
{
    struct load *load = &f->load;
    char report[4096];
    size_t off = 0;
    int failures = 0;
    int ops = 0;
    int64_t slowest = 0;

    loadJoin(load);
    report[0] = '\0';
#define REPORT(...)                                                        \
    do {                                                                   \
        int w_ = snprintf(report + off, sizeof report - off, __VA_ARGS__); \
        if (w_ > 0 && off + (size_t)w_ < sizeof report) {                  \
            off += (size_t)w_;                                             \
        }                                                                  \
    } while (0)

    for (int i = 0; i < LOAD_WORKERS; i++) {
        struct worker *w = &load->w[i];
        char prefix[64];
        struct tn_lock_info *locks = NULL;
        size_t n = 0;
        int rc;
        bool found[LOAD_KEEP] = { false };

        ops += w->acquires + w->releases;
        if (w->max_call_ms > slowest) {
            slowest = w->max_call_ms;
        }
        for (int k = 0; k < w->failures && k < LOAD_NOTES; k++) {
            REPORT("\n  worker %d: %s", i, w->notes[k]);
        }
        failures += w->failures;
        snprintf(prefix, sizeof prefix, "%s/%d/", load->prefix, i);
        rc = tn_lock_list(load->client, prefix, 0, NULL, &locks, &n);
        if (rc != TN_OK) {
            REPORT("\n  worker %d: list %s: %s (%s)", i, prefix, tn_errname(rc),
                   errmsg(load->client));
            failures++;
            continue;
        }
        for (size_t j = 0; j < n; j++) {
            const char *res = locks[j].resource;
            int k = atoi(res + strlen(prefix));
            uint64_t token =
                locks[j].n_holders > 0 ? locks[j].holders[0].token : 0;
            bool mine = false;
            for (int h = 0; h < w->n_held; h++) {
                if (w->held[h].k == k) {
                    mine = true;
                    found[h] = true;
                    if (w->held[h].token != token) {
                        REPORT("\n  %s: held with token %" PRIu64
                               ", listed with %" PRIu64,
                               res, w->held[h].token, token);
                        failures++;
                    }
                }
            }
            if (mine) {
                continue;
            }
            if (k >= 0 && k < LOAD_MAX_K && w->st[k] == K_RELEASED) {
                REPORT(
                    "\n  %s: released (OK) but listed as held, token "
                    "%" PRIu64,
                    res, token);
            } else {
                REPORT("\n  %s: listed (token %" PRIu64
                       ") but the worker was never told it got it (%d)",
                       res, token, k >= 0 && k < LOAD_MAX_K ? w->st[k] : -1);
            }
            failures++;
        }
        tn_lock_list_free(locks, n);
        for (int h = 0; h < w->n_held; h++) {
            if (!found[h]) {
                REPORT("\n  %s/%d/%d: acquired (token %" PRIu64
                       ") and never released, but not listed: lost",
                       load->prefix, i, w->held[h].k, w->held[h].token);
                failures++;
            }
        }
    }
    fprintf(stderr,
            "load %s: %d successful calls, slowest %" PRId64
            " ms, %d "
            "failures\n",
            load->prefix, ops, slowest, failures);
    if (failures > 0) {
        fail_msg("load %s: %d failures:%s", load->prefix, failures, report);
    }
    /* Clean up: release what is held, close the sessions. */
    for (int i = 0; i < LOAD_WORKERS; i++) {
        struct worker *w = &load->w[i];
        for (int h = 0; h < w->n_held; h++) {
            int rc = tn_lock_release(w->held[h].l);
            if (rc != TN_OK) {
                fail_msg("release after the load: %s (%s)", tn_errname(rc),
                         errmsg(load->client));
            }
            tn_lock_free(w->held[h].l);
        }
        w->n_held = 0;
        assert_int_equal(tn_session_close(w->s), TN_OK);
        w->s = NULL;
    }
#undef REPORT
}

static void loadFree(struct load *load)
{
    if (!load->running) {
        return;
    }
    loadJoin(load);
    for (int i = 0; i < LOAD_WORKERS; i++) {
        struct worker *w = &load->w[i];
        for (int h = 0; h < w->n_held; h++) {
            tn_lock_free(w->held[h].l);
        }
        if (w->s != NULL) {
            tn_session_abandon(w->s);
        }
        free(w->st);
    }
    tn_client_close(load->client);
    load->running = false;
}

/* ----------------------------------------------------- setup, teardown */

static int setUp(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    const char *bin = getenv("TENURE_BIN_DIR");
    const char *tmp = getenv("TMPDIR");
    if (f == NULL) {
        return -1;
    }
    if (bin != NULL && *bin != '\0') {
        snprintf(f->bin_dir, sizeof f->bin_dir, "%s", bin);
    } else {
        ssize_t n =
            readlink("/proc/self/exe", f->bin_dir, sizeof f->bin_dir - 1);
        char *slash;
        if (n <= 0) {
            return -1;
        }
        f->bin_dir[n] = '\0';
        slash = strrchr(f->bin_dir, '/');
        if (slash != NULL) {
            *slash = '\0';
        }
    }
    snprintf(f->tenured, sizeof f->tenured, "%s/tenured", f->bin_dir);
    snprintf(f->tenurectl, sizeof f->tenurectl, "%s/tenurectl", f->bin_dir);
    if (tmp == NULL || *tmp == '\0' || strlen(tmp) > 200) {
        tmp = "/tmp";
    }
    snprintf(f->tmp, sizeof f->tmp, "%s/tenure-ops-XXXXXX", tmp);
    if (mkdtemp(f->tmp) == NULL) {
        return -1;
    }
    *state = f;
    return 0;
}

static int tearDown(void **state)
{
    struct fixture *f = *state;
    bool passed = f->cluster.passed;
    char cmd[PATH_SIZE + 32];

    loadFree(&f->load);
    if (f->admin != NULL) {
        tn_client_close(f->admin);
    }
    if (f->admin2 != NULL) {
        tn_client_close(f->admin2);
    }
    for (int i = 0; i < f->n_xnodes; i++) {
        xnodeRunning(&f->xnodes[i]);
        xnodeKill(&f->xnodes[i]);
        if (!passed) {
            char title[64];
            snprintf(title, sizeof title, "node %" PRIu64 " (started here)",
                     f->xnodes[i].id);
            dumpTail(title, f->xnodes[i].log_path, 40);
        }
    }
    if (f->cluster2.n > 0) {
        if (passed) {
            clusterPassed(&f->cluster2);
        }
        clusterDestroy(&f->cluster2);
    }
    clusterDestroy(&f->cluster);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->tmp);
    if (system(cmd) != 0) {
        fprintf(stderr, "could not remove %s\n", f->tmp);
    }
    free(f);
    return 0;
}

static int startCluster(struct tn_cluster *c, int n, const char *const *extra)
{
    if (clusterStartWith(c, n, extra) != 0) {
        fail_msg("clusterStart: %s", c->errmsg);
    }
    if (clusterWaitLeader(c, 20000) < 0) {
        fail_msg("no leader: %s", c->errmsg);
    }
    return waitLeaderWhere(c, 20000, anyLeader, 0, "agreed on");
}

/* Restarts fixture node I with EXTRA (NULL-terminated, borrowed) in place
 * of the cluster's extra arguments, then puts them back. */
static void restartWith(struct tn_cluster *c, int i, const char *const *extra)
{
    const char *saved[CLUSTER_MAX_EXTRA_ARGS + 1];
    int n = 0;
    memcpy(saved, c->extra_args, sizeof saved);
    for (; extra[n] != NULL; n++) {
        c->extra_args[n] = extra[n];
    }
    c->extra_args[n] = NULL;
    if (clusterRestart(c, i) != 0) {
        memcpy(c->extra_args, saved, sizeof saved);
        fail_msg("restart of node %d: %s", clusterNodeId(i), c->errmsg);
    }
    memcpy(c->extra_args, saved, sizeof saved);
}

/* "EP,127.0.0.1:P,..." of the fixture's nodes and the xnodes given. */
static void endpointsWith(struct tn_cluster *c,
                          struct xnode *const *x,
                          int n,
                          char *buf,
                          size_t len)
{
    size_t off = (size_t)snprintf(buf, len, "%s", clusterRpcEndpoints(c));
    for (int i = 0; i < n && off < len; i++) {
        off += (size_t)snprintf(buf + off, len - off, ",%s", x[i]->rpc);
    }
}

/* ------------------------------------------------------ config errors */

static void expectExit2(const struct proc_result *r,
                        const char *what,
                        const char *const *needles)
{
    if (r->status != 2) {
        fail_msg("%s: exit %d, expected 2; stderr: %s", what, r->status,
                 r->err);
    }
    for (int i = 0; needles[i] != NULL; i++) {
        if (strstr(r->err, needles[i]) == NULL) {
            fail_msg("%s: stderr does not say '%s': %s", what, needles[i],
                     r->err);
        }
    }
}

#define EXPECT_EXIT2(r, what, ...) \
    expectExit2(r, what, (const char *const[]){ __VA_ARGS__, NULL })

/* Option errors: each names the bad key (and file:line for the config
 * file), exits 2 and creates nothing. A good config file with flags
 * overriding it runs; --log-file is reopened on SIGHUP; SIGTERM exits 0. */
static void test_config_errors(void **state)
{
    struct fixture *f = *state;
    struct proc_result r;
    char never[PATH_SIZE];
    char path[PATH_SIZE];
    char path2[PATH_SIZE];
    char text[2048];
    char where[PATH_SIZE + 16];
    struct stat st;

    snprintf(never, sizeof never, "%s/never", f->tmp);

    /* An unknown key in the file: named, with file:line. */
    snprintf(path, sizeof path, "%s/unknown.conf", f->tmp);
    snprintf(text, sizeof text,
             "# tenured settings\n"
             "id = 1\n"
             "\n"
             "data = %s   # trailing comment\n"
             "raft-address = 127.0.0.1:7001\n"
             "rpc = 127.0.0.1:7101\n",
             never);
    writeFile(path, text);
    snprintf(where, sizeof where, "%s:5:", path);
    TENURED(f, &r, "--config", path);
    EXPECT_EXIT2(&r, "unknown key in the config file", where, "unknown key",
                 "raft-address");

    /* A bad value in the file: the key, file:line and the value. */
    snprintf(path, sizeof path, "%s/badvalue.conf", f->tmp);
    writeFile(path, "id = 1\nheartbeat = often\n");
    snprintf(where, sizeof where, "%s:2:", path);
    TENURED(f, &r, "--config", path, "--data", never, "--raft",
            "127.0.0.1:7001", "--rpc", "127.0.0.1:7101", "--http",
            "127.0.0.1:7201");
    EXPECT_EXIT2(&r, "bad value in the config file", where, "heartbeat",
                 "often");

    /* A line that is not `key = value`. */
    snprintf(path, sizeof path, "%s/noequals.conf", f->tmp);
    writeFile(path, "id = 1\n\n\nelection-timeout 300\n");
    snprintf(where, sizeof where, "%s:4:", path);
    TENURED(f, &r, "--config", path);
    EXPECT_EXIT2(&r, "line without '='", where, "election-timeout");

    /* An id that is not a number; a boolean that is not one. */
    snprintf(path, sizeof path, "%s/badid.conf", f->tmp);
    writeFile(path, "id = one\n");
    snprintf(where, sizeof where, "%s:1:", path);
    TENURED(f, &r, "--config", path);
    EXPECT_EXIT2(&r, "bad id in the config file", where, "id", "one");
    snprintf(path, sizeof path, "%s/badjoin.conf", f->tmp);
    writeFile(path, "join = maybe\n");
    TENURED(f, &r, "--config", path);
    EXPECT_EXIT2(&r, "bad join value", "join", "maybe");

    /* Bad values on the command line. */
    TENURED(f, &r, "--id", "1", "--data", never, "--raft", "127.0.0.1:7001",
            "--rpc", "127.0.0.1:7101", "--http", "127.0.0.1:7201",
            "--election-timeout", "10");
    EXPECT_EXIT2(&r, "election-timeout below its range", "election-timeout",
                 "10");
    TENURED(f, &r, "--id", "1", "--data", never, "--raft", "127.0.0.1:7001",
            "--rpc", "127.0.0.1:7101", "--http", "127.0.0.1:7201",
            "--min-free-disk", "1G");
    EXPECT_EXIT2(&r, "min-free-disk with a unit", "min-free-disk", "1G");
    TENURED(f, &r, "--id", "1", "--data", never, "--raft", "127.0.0.1:7001",
            "--rpc", "127.0.0.1:7101", "--http", "127.0.0.1:7201", "--max-ttl",
            "-5");
    EXPECT_EXIT2(&r, "negative max-ttl", "max-ttl");
    TENURED(f, &r, "--id", "1", "--data", never, "--raft", "127.0.0.1:7001",
            "--rpc", "127.0.0.1:7101", "--http", "127.0.0.1:7201",
            "--no-such-flag");
    EXPECT_EXIT2(&r, "unknown flag", "no-such-flag");

    /* --join and --initial-cluster exclude each other, file or flags. */
    snprintf(path, sizeof path, "%s/join.conf", f->tmp);
    writeFile(path, "join = true\n");
    TENURED(f, &r, "--config", path, "--id", "1", "--data", never, "--raft",
            "127.0.0.1:7001", "--rpc", "127.0.0.1:7101", "--http",
            "127.0.0.1:7201", "--initial-cluster", "1=127.0.0.1:7001");
    EXPECT_EXIT2(&r, "join in the file, initial-cluster on the command line",
                 "join", "initial-cluster");
    TENURED(f, &r, "--id", "1", "--data", never, "--raft", "127.0.0.1:7001",
            "--rpc", "127.0.0.1:7101", "--http", "127.0.0.1:7201", "--join",
            "--initial-cluster", "1=127.0.0.1:7001");
    EXPECT_EXIT2(&r, "--join with --initial-cluster", "join",
                 "initial-cluster");

    /* A config file that is not there. */
    snprintf(path, sizeof path, "%s/missing.conf", f->tmp);
    TENURED(f, &r, "--config", path);
    EXPECT_EXIT2(&r, "missing config file", path);

    /* None of that started anything. */
    if (stat(never, &st) == 0) {
        fail_msg("a failed start created the data dir %s", never);
    }

    /* A good file; the flags override it (--id 1 over id = 7, --http over
     * http): the node answers on the flag's port as node 1. */
    {
        int ports[4];
        char raft[32];
        char rpc[32];
        char http_file[32];
        char http_flag[32];
        char log[PATH_SIZE];
        char rotated[PATH_SIZE];
        char data[PATH_SIZE];
        const char *argv[12];
        struct http_response hr;
        json_t *j = NULL;
        int64_t deadline;
        int status;
        pid_t pid;
        int ws;

        pickPorts(ports, 4);
        snprintf(raft, sizeof raft, "127.0.0.1:%d", ports[0]);
        snprintf(rpc, sizeof rpc, "127.0.0.1:%d", ports[1]);
        snprintf(http_file, sizeof http_file, "127.0.0.1:%d", ports[2]);
        snprintf(http_flag, sizeof http_flag, "127.0.0.1:%d", ports[3]);
        snprintf(log, sizeof log, "%s/good.log", f->tmp);
        snprintf(rotated, sizeof rotated, "%s/good.log.1", f->tmp);
        snprintf(data, sizeof data, "%s/good-data", f->tmp);
        snprintf(path2, sizeof path2, "%s/good.conf", f->tmp);
        snprintf(text, sizeof text,
                 "# a node of one\n"
                 "id = 7\n"
                 "data = %s\n"
                 "raft = %s\n"
                 "rpc = %s\n"
                 "http = %s   # overridden by --http\n"
                 "\n"
                 "log-level = debug\n"
                 "log-file = %s\n"
                 "election-timeout = 200\n"
                 "heartbeat = 20\n"
                 "min-ttl = 1000\n"
                 "max-ttl = 60000\n"
                 "snapshot-threshold = 512\n",
                 data, raft, rpc, http_file, log);
        writeFile(path2, text);
        argv[0] = f->tenured;
        argv[1] = "--config";
        argv[2] = path2;
        argv[3] = "--id";
        argv[4] = "1";
        argv[5] = "--http";
        argv[6] = http_flag;
        argv[7] = NULL;
        snprintf(path, sizeof path, "%s/good.out", f->tmp);
        pid = spawnDaemon(argv, path);
        deadline = nowMs() + 20000;
        for (;;) {
            if (reap(pid, 0, &ws)) {
                char what[96];
                describeStatus(what, sizeof what, ws);
                dumpTail("tenured --config", path, 20);
                dumpTail("its --log-file", log, 20);
                fail_msg("tenured --config %s ended: %s", path2, what);
            }
            status =
                httpJson(ports[3], "GET", "/v1/cluster", NULL, NULL, &j, NULL);
            if (status == 200 && j != NULL &&
                json_integer_value(json_object_get(j, "leader_id")) == 1) {
                break;
            }
            json_decref(j);
            j = NULL;
            if (nowMs() >= deadline) {
                kill(pid, SIGKILL);
                reap(pid, 5000, &ws);
                dumpTail("its --log-file", log, 20);
                fail_msg(
                    "the node of good.conf did not lead on the --http "
                    "port within 20 s (last status %d)",
                    status);
            }
            sleepMs(50);
        }
        assert_int_equal(json_integer_value(json_object_get(j, "node_id")), 1);
        json_decref(j);
        /* Nothing on the file's http address. */
        status = httpRequestTimeout(ports[2], "GET", "/healthz", NULL, NULL,
                                    1000, &hr);
        httpResponseFree(&hr);
        if (status > 0) {
            fail_msg(
                "the config file's http address answered (%d) though "
                "--http overrides it",
                status);
        }
        /* The log goes to --log-file, with the flag's id. */
        if (!clusterFileContains(log, "node=1 ")) {
            dumpTail("its --log-file", log, 20);
            fail_msg("%s has no line of node=1", log);
        }
        /* SIGHUP reopens it after a rotation. */
        if (rename(log, rotated) != 0) {
            fail_msg("rename %s: %s", log, strerror(errno));
        }
        kill(pid, SIGHUP);
        deadline = nowMs() + 10000;
        while (!clusterFileContains(log, "log file reopened")) {
            if (nowMs() >= deadline) {
                kill(pid, SIGKILL);
                reap(pid, 5000, &ws);
                fail_msg(
                    "no 'log file reopened' in a new %s within 10 s of "
                    "SIGHUP",
                    log);
            }
            sleepMs(50);
        }
        /* SIGTERM: exit 0, said in the new log. */
        kill(pid, SIGTERM);
        if (!reap(pid, 15000, &ws)) {
            kill(pid, SIGKILL);
            reap(pid, 5000, &ws);
            fail_msg("tenured ignored SIGTERM for 15 s");
        }
        if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
            char what[96];
            describeStatus(what, sizeof what, ws);
            fail_msg("tenured after SIGTERM: %s, expected exit status 0", what);
        }
        assert_true(clusterFileContains(log, "msg=\"stopped\""));
    }
    clusterPassed(&f->cluster);
}

/* --------------------------------------------------- grow and shrink */

struct adder
{
    tn_client *c;
    uint64_t id;
    const char *address;
    int rc;
    char msg[TN_ERRMSG_BUF_SIZE];
    int64_t took_ms;
};

static void *adderMain(void *arg)
{
    struct adder *a = arg;
    int64_t t0 = nowMs();
    a->rc = tn_member_add(a->c, a->id, a->address);
    a->took_ms = nowMs() - t0;
    tn_client_errmsg_copy(a->c, a->msg, sizeof a->msg);
    return NULL;
}

/* 3 -> 5 -> 3 voters while workers acquire and release. */
static void test_grow_and_shrink_under_load(void **state)
{
    struct fixture *f = *state;
    struct tn_cluster *c = &f->cluster;
    struct xnode *n4;
    struct xnode *n5;
    char ep[512];
    struct proc_result r;
    struct adder a5;
    pthread_t t5;
    char notes[1024] = "";
    tn_session *ms;
    tn_lock *marker;
    uint64_t marker_token;
    uint64_t leader;
    uint64_t gone[2];
    int n_gone = 0;
    uint64_t left[3];
    int n_left = 0;
    char role[32];
    char id[24];
    int64_t deadline;
    int rc;

    startCluster(c, 3, NULL);
    n4 = xnodePrepare(f, 4);
    n5 = xnodePrepare(f, 5);
    endpointsWith(c, (struct xnode *const[]){ n4, n5 }, 2, ep, sizeof ep);
    f->admin = openClient(ep);
    f->admin2 = openClient(ep);

    ms = openSession(f->admin, "grow-marker");
    marker = mustAcquire(ms, "grow/marker", NULL);
    marker_token = tn_lock_token(marker);

    loadStart(f, ep, "grow");
    loadProgress(f, 30, 20000, "before any change");

    /* Add node 5 while it is not running yet: libraft adds it as a spare
     * and waits for it to catch up, so the change stays in progress. */
    memset(&a5, 0, sizeof a5);
    a5.c = f->admin2;
    a5.id = 5;
    a5.address = n5->raft;
    assert_int_equal(pthread_create(&t5, NULL, adderMain, &a5), 0);
    deadline = nowMs() + 10000;
    for (;;) {
        memberRole(f->admin, 5, role, sizeof role);
        if (role[0] != '\0') {
            break;
        }
        if (nowMs() >= deadline) {
            pthread_join(t5, NULL);
            fail_msg(
                "node 5 not listed as a member within 10 s of "
                "tn_member_add (which returned %s: %s)",
                tn_errname(a5.rc), a5.msg);
        }
        sleepMs(20);
    }
    /* A second change meanwhile: refused, saying why. */
    rc = tn_member_add(f->admin, 4, n4->raft);
    if (rc != TN_REFUSED || strstr(errmsg(f->admin), "in progress") == NULL) {
        xnodeStartJoin(f, n5);
        pthread_join(t5, NULL);
        fail_msg(
            "member add during another change (node 5 is '%s'): %s (%s), "
            "expected REFUSED saying another change is in progress",
            role, tn_errname(rc), errmsg(f->admin));
    }
    /* Node 5 starts: the pending add completes. */
    xnodeStartJoin(f, n5);
    pthread_join(t5, NULL);
    if (a5.rc != TN_OK) {
        /* Noted; the rest still runs (the change may have completed). */
        snprintf(notes, sizeof notes,
                 "\n  tn_member_add(5), started before node 5 and answered "
                 "after it came up: %s (%s) after %" PRId64 " ms",
                 tn_errname(a5.rc), a5.msg, a5.took_ms);
        fprintf(stderr, "grow/shrink: %s\n", notes + 3);
    }
    loadProgress(f, 20, 20000, "after adding node 5");

    /* Node 4 through tenurectl. */
    xnodeStartJoin(f, n4);
    CTL(f, ep, &r, "cluster", "add", "4", n4->raft);
    if (r.status != 0 || strstr(r.out, "done") == NULL) {
        fail_msg("tenurectl cluster add 4: exit %d, out '%s', err '%s'",
                 r.status, r.out, r.err);
    }
    leader = waitMembers(f->admin, (uint64_t[]){ 1, 2, 3, 4, 5 }, 5, 20000);
    loadProgress(f, 20, 20000, "with 5 voters");

    /* The new nodes serve the lock state. */
    for (int i = 0; i < 2; i++) {
        struct xnode *x = i == 0 ? n4 : n5;
        uint64_t token = 0;
        deadline = nowMs() + 15000;
        for (;;) {
            json_t *j = NULL;
            int status = httpJson(x->http_port, "GET",
                                  "/v1/locks/grow/marker?consistency=stale",
                                  NULL, NULL, &j, NULL);
            token =
                status == 200
                    ? (uint64_t)json_integer_value(json_object_get(j, "token"))
                    : 0;
            json_decref(j);
            if (token == marker_token) {
                break;
            }
            if (nowMs() >= deadline) {
                fail_msg("node %" PRIu64
                         " (stale read): grow/marker token "
                         "%" PRIu64 " (HTTP %d), expected %" PRIu64,
                         x->id, token, status, marker_token);
            }
            sleepMs(100);
        }
    }

    /* Removing the leader is refused. */
    rc = tn_member_remove(f->admin, leader);
    if (rc != TN_REFUSED || strstr(errmsg(f->admin), "leader") == NULL) {
        fail_msg("removing the leader (node %" PRIu64
                 "): %s (%s), expected "
                 "REFUSED naming the leader",
                 leader, tn_errname(rc), errmsg(f->admin));
    }

    /* Shrink: remove two of the original nodes that do not lead, one with
     * the library and one with tenurectl. */
    for (uint64_t k = 1; k <= 5; k++) {
        if (k != leader && k <= 3 && n_gone < 2) {
            gone[n_gone++] = k;
        } else {
            left[n_left++] = k;
        }
    }
    assert_int_equal(n_gone, 2);
    assert_int_equal(n_left, 3);
    rc = tn_member_remove(f->admin, gone[0]);
    if (rc != TN_OK) {
        fail_msg("tn_member_remove(%" PRIu64 "): %s (%s)", gone[0],
                 tn_errname(rc), errmsg(f->admin));
    }
    snprintf(id, sizeof id, "%" PRIu64, gone[1]);
    CTL(f, ep, &r, "cluster", "remove", id);
    if (r.status != 0 || strstr(r.out, "done") == NULL) {
        fail_msg("tenurectl cluster remove %s: exit %d, out '%s', err '%s'", id,
                 r.status, r.out, r.err);
    }
    leader = waitMembers(f->admin, left, 3, 20000);
    /* The removed nodes stop cleanly. */
    for (int g = 0; g < 2; g++) {
        if (clusterStop(c, (int)gone[g] - 1) != 0) {
            fail_msg("SIGTERM of removed node %" PRIu64 ": %s", gone[g],
                     c->errmsg);
        }
    }
    loadProgress(f, 20, 20000, "with 3 voters after the removals");

    /* 3 voters now: one more down still leaves a quorum of 2. */
    for (int k = 0; k < 3; k++) {
        if (left[k] == leader) {
            continue;
        }
        if (left[k] <= 3) {
            assert_int_equal(clusterKill(c, (int)left[k] - 1), 0);
        } else {
            xnodeKill(left[k] == 4 ? n4 : n5);
        }
        fprintf(stderr,
                "grow/shrink: killed node %" PRIu64
                " of the 3 voters left (leader %" PRIu64 ")\n",
                left[k], leader);
        break;
    }
    loadProgress(f, 20, 20000, "with 2 of the 3 voters left");
    loadStopAndCheck(f);

    assert_int_equal(tn_lock_release(marker), TN_OK);
    tn_lock_free(marker);
    assert_int_equal(tn_session_close(ms), TN_OK);
    if (notes[0] != '\0') {
        fail_msg("grow and shrink:%s", notes);
    }
    clusterPassed(c);
}

/* ----------------------------------------------------------- replace */

/* kill -9 of a follower, removed; a fresh node 4 (empty data dir) added in
 * its place catches up and serves the same state on stale reads. */
static void test_replace_killed_member(void **state)
{
    struct fixture *f = *state;
    struct tn_cluster *c = &f->cluster;
    struct xnode *n4;
    char ep[512];
    struct proc_result r;
    tn_session *s;
    tn_lock *locks[4];
    uint64_t http_token;
    char *expected;
    char *seen = NULL;
    int status;
    int leader;
    int dead;
    int other;
    int64_t deadline;
    int rc;

    leader = startCluster(c, 3, NULL);
    dead = (leader + 1) % 3;
    other = (leader + 2) % 3;
    n4 = xnodePrepare(f, 4);
    endpointsWith(c, (struct xnode *const[]){ n4 }, 1, ep, sizeof ep);
    f->admin = openClient(ep);

    s = openSession(f->admin, "replace");
    locks[0] = mustAcquire(s, "repl/a", NULL);
    locks[1] = mustAcquire(s, "repl/b", NULL);
    locks[2] = mustAcquire(s, "repl/shared",
                           &(struct tn_acquire_opts){ .mode = TN_MODE_SHARED });
    status = httpAcquire(clusterHttpPort(c, other), "repl/http", "replace-http",
                         &http_token, NULL);
    assert_int_equal(status, 201);

    assert_int_equal(clusterKill(c, dead), 0);
    rc = tn_member_remove(f->admin, (uint64_t)clusterNodeId(dead));
    if (rc != TN_OK) {
        fail_msg("removing killed node %d: %s (%s)", clusterNodeId(dead),
                 tn_errname(rc), errmsg(f->admin));
    }
    waitMembers(f->admin,
                (uint64_t[]){ (uint64_t)clusterNodeId(leader),
                              (uint64_t)clusterNodeId(other) },
                2, 15000);

    xnodeStartJoin(f, n4);
    CTL(f, ep, &r, "cluster", "add", "4", n4->raft);
    if (r.status != 0 || strstr(r.out, "done") == NULL) {
        fail_msg("tenurectl cluster add 4: exit %d, out '%s', err '%s'",
                 r.status, r.out, r.err);
    }
    waitMembers(f->admin,
                (uint64_t[]){ (uint64_t)clusterNodeId(leader),
                              (uint64_t)clusterNodeId(other), 4 },
                3, 20000);
    locks[3] = mustAcquire(s, "repl/after-add", NULL);

    /* The leader's view, then the new node's (stale) until equal. */
    expected = lockList(clusterHttpPort(c, leader), "repl/", false, &status);
    if (expected == NULL) {
        fail_msg("GET /v1/locks?prefix=repl/ on the leader: %d", status);
    }
    assert_non_null(strstr(expected, "\"count\":5"));
    deadline = nowMs() + 15000;
    for (;;) {
        free(seen);
        seen = lockList(n4->http_port, "repl/", true, &status);
        if (seen != NULL && strcmp(seen, expected) == 0) {
            break;
        }
        if (nowMs() >= deadline) {
            fail_msg(
                "node 4 (stale) within 15 s: HTTP %d\n  %s\nleader:\n  "
                "%s",
                status, seen != NULL ? seen : "(none)", expected);
        }
        sleepMs(100);
    }
    free(seen);
    free(expected);
    {
        json_t *j = NULL;
        char path[64];
        snprintf(path, sizeof path, "/v1/locks/repl/a?consistency=stale");
        status = httpJson(n4->http_port, "GET", path, NULL, NULL, &j, NULL);
        assert_int_equal(status, 200);
        assert_int_equal(json_integer_value(json_object_get(j, "token")),
                         tn_lock_token(locks[0]));
        json_decref(j);
    }

    /* Node 4 votes: with the other old follower gone too, the leader and
     * node 4 still commit. */
    assert_int_equal(clusterKill(c, other), 0);
    {
        tn_lock *l = mustAcquire(s, "repl/final", NULL);
        deadline = nowMs() + 10000;
        for (;;) {
            json_t *j = NULL;
            status = httpJson(n4->http_port, "GET",
                              "/v1/locks/repl/final?consistency=stale", NULL,
                              NULL, &j, NULL);
            if (status == 200 && (uint64_t)json_integer_value(json_object_get(
                                     j, "token")) == tn_lock_token(l)) {
                json_decref(j);
                break;
            }
            json_decref(j);
            if (nowMs() >= deadline) {
                fail_msg("node 4 does not show repl/final within 10 s");
            }
            sleepMs(100);
        }
        assert_int_equal(tn_lock_release(l), TN_OK);
        tn_lock_free(l);
    }
    assert_int_equal(
        httpRelease(clusterHttpPort(c, leader), "repl/http", http_token), 204);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(tn_lock_release(locks[i]), TN_OK);
        tn_lock_free(locks[i]);
    }
    assert_int_equal(tn_session_close(s), TN_OK);

    /* Voters now: the leader, node 4, and node OTHER, down for a while.
     * Removing node 4 would leave the leader alone with a dead voter:
     * refused, saying quorum would be lost. */
    sleepMs(1500);
    rc = tn_member_remove(f->admin, 4);
    if (rc != TN_REFUSED || strstr(errmsg(f->admin), "quorum") == NULL) {
        char what[TN_ERRMSG_BUF_SIZE];
        struct http_response hr;
        snprintf(what, sizeof what, "%s", errmsg(f->admin));
        status = httpRequestTimeout(
            clusterHttpPort(c, leader), "PUT", "/v1/locks/repl/after-remove",
            NULL, "{\"holder\":\"x\",\"ttl_ms\":5000}", 5000, &hr);
        httpResponseFree(&hr);
        fail_msg(
            "removing node 4, which would leave voters %d (up) and %d "
            "(down 1.5 s): %s (%s), expected REFUSED (would lose "
            "quorum); an acquire on the leader then: %d",
            clusterNodeId(leader), clusterNodeId(other), tn_errname(rc), what,
            status);
    }
    clusterPassed(c);
}

/* ---------------------------------------------------------- transfer */

/* After a transfer was started (HOW), waits up to 5 s for the running
 * nodes to agree on a leader for which OK(i, ARG) holds. When that does
 * not happen, appends a line to NOTES and returns whoever leads then. */
static int expectTransfer(struct tn_cluster *c,
                          bool (*ok)(int i, int arg),
                          int arg,
                          const char *how,
                          char *notes,
                          size_t len)
{
    int64_t t0 = nowMs();
    int now = -1;
    size_t off = strlen(notes);
    while (nowMs() - t0 < 5000) {
        now = agreedLeader(c);
        if (now >= 0 && ok(now, arg)) {
            fprintf(stderr,
                    "transfer (%s): node %d leads after %" PRId64 " ms\n", how,
                    clusterNodeId(now), nowMs() - t0);
            return now;
        }
        sleepMs(20);
    }
    snprintf(notes + off, len - off,
             "\n  %s: answered OK, but %s%d leads 5 s later", how,
             now >= 0 ? "node " : "no agreed leader ",
             now >= 0 ? clusterNodeId(now) : -1);
    fprintf(stderr, "transfer (%s): did not happen\n", how);
    return waitLeaderWhere(c, 15000, anyLeader, 0, "agreed on");
}

/* Leadership moved six times under load: to a named node through the
 * library, to another through tenurectl, then to "the best" one, twice
 * over. Each time the new leader must be the one asked for (another one
 * for "the best"); the workers see no failure and lose nothing. */
static void test_transfer_under_load(void **state)
{
    struct fixture *f = *state;
    struct tn_cluster *c = &f->cluster;
    struct proc_result r;
    char notes[2048] = "";
    char how[96];
    char id[24];
    int leader;
    int target;
    int rc;

    leader = startCluster(c, 3, NULL);
    f->admin = openClient(clusterRpcEndpoints(c));
    loadStart(f, clusterRpcEndpoints(c), "xfer");
    loadProgress(f, 30, 20000, "before the transfers");

    for (int round = 0; round < 2; round++) {
        target = (leader + 1) % 3;
        snprintf(how, sizeof how, "tn_leader_transfer(%d) from node %d",
                 clusterNodeId(target), clusterNodeId(leader));
        rc = tn_leader_transfer(f->admin, (uint64_t)clusterNodeId(target));
        if (rc != TN_OK) {
            fail_msg("%s: %s (%s)", how, tn_errname(rc), errmsg(f->admin));
        }
        leader = expectTransfer(c, leaderIs, target, how, notes, sizeof notes);
        loadProgress(f, 30, 20000, "after a transfer");

        target = (leader + 1) % 3;
        snprintf(id, sizeof id, "%d", clusterNodeId(target));
        snprintf(how, sizeof how, "tenurectl cluster transfer %s from node %d",
                 id, clusterNodeId(leader));
        CTL(f, clusterRpcEndpoints(c), &r, "cluster", "transfer", id);
        if (r.status != 0 || strstr(r.out, "transfer started") == NULL) {
            fail_msg("%s: exit %d, out '%s', err '%s'", how, r.status, r.out,
                     r.err);
        }
        leader = expectTransfer(c, leaderIs, target, how, notes, sizeof notes);
        loadProgress(f, 30, 20000, "after a transfer");

        /* Without an id: the most up-to-date voter other than the leader. */
        snprintf(how, sizeof how, "tenurectl cluster transfer from node %d",
                 clusterNodeId(leader));
        CTL(f, clusterRpcEndpoints(c), &r, "cluster", "transfer");
        if (r.status != 0 || strstr(r.out, "transfer started") == NULL) {
            fail_msg("%s: exit %d, out '%s', err '%s'", how, r.status, r.out,
                     r.err);
        }
        leader =
            expectTransfer(c, leaderIsNot, leader, how, notes, sizeof notes);
        loadProgress(f, 30, 20000, "after a transfer");
    }

    /* To a node that is not a member: refused, the leader stays. */
    rc = tn_leader_transfer(f->admin, 42);
    if (rc == TN_OK) {
        fail_msg("leadership transfer to node 42 (not a member) returned OK");
    }
    sleepMs(500);
    assert_int_equal(waitLeaderWhere(c, 10000, anyLeader, 0, "agreed on"),
                     leader);

    loadProgress(f, 30, 20000, "at the end");
    loadStopAndCheck(f);
    if (notes[0] != '\0') {
        fail_msg("leadership transfers that did not happen:%s", notes);
    }
    clusterPassed(c);
}

/* ----------------------------------------------------------- SIGTERM */

/* SIGTERM to the leader under load: it hands leadership over and exits 0;
 * no acknowledged operation is lost; the cluster keeps serving, and the
 * node comes back. */
static void test_sigterm_leader_under_load(void **state)
{
    struct fixture *f = *state;
    struct tn_cluster *c = &f->cluster;
    int leader;
    int next;
    int64_t t0;
    int64_t stop_ms;
    int64_t elected_ms;

    leader = startCluster(c, 3, NULL);
    loadStart(f, clusterRpcEndpoints(c), "term");
    loadProgress(f, 30, 20000, "before SIGTERM");

    t0 = nowMs();
    if (clusterStop(c, leader) != 0) {
        fail_msg("SIGTERM of the leader (node %d): %s", clusterNodeId(leader),
                 c->errmsg);
    }
    stop_ms = nowMs() - t0;
    next = waitLeaderWhere(c, 15000, leaderIsNot, leader,
                           "other than the stopped one");
    elected_ms = nowMs() - t0;
    fprintf(stderr,
            "sigterm: node %d exited 0 after %" PRId64
            " ms; node %d leads after %" PRId64 " ms\n",
            clusterNodeId(leader), stop_ms, clusterNodeId(next), elected_ms);
    if (!clusterFileContains(c->nodes[leader].log_path, "handing leadership over")) {
        fail_msg("node %d's log does not say it handed leadership over",
                 clusterNodeId(leader));
    }
    assert_true(clusterFileContains(c->nodes[leader].log_path, "msg=\"stopped\""));
    loadProgress(f, 30, 20000, "after the leader stopped");

    /* It comes back as a follower; everybody still serves. */
    if (clusterRestart(c, leader) != 0) {
        fail_msg("restart of node %d: %s", clusterNodeId(leader), c->errmsg);
    }
    waitLeaderWhere(c, 20000, anyLeader, 0, "agreed on by all 3");
    loadProgress(f, 30, 20000, "after the old leader came back");
    loadStopAndCheck(f);
    clusterPassed(c);
}

/* ---------------------------------------------------------- snapshot */

static uint64_t maxToken(const char *list)
{
    json_t *j = json_loads(list, 0, NULL);
    json_t *lock;
    size_t i;
    uint64_t max = 0;
    json_array_foreach (json_object_get(j, "locks"), i, lock) {
        json_t *h;
        size_t k;
        json_array_foreach (json_object_get(lock, "holders"), k, h) {
            uint64_t t =
                (uint64_t)json_integer_value(json_object_get(h, "token"));
            if (t > max) {
                max = t;
            }
        }
    }
    json_decref(j);
    return max;
}

/* Saved from a running cluster (tenurectl and the library), restored into
 * a fresh one: the same GET /v1/locks?prefix= (tokens, sessions, holders,
 * generations); larger tokens afterwards; a second restore refused. */
static void test_snapshot_save_restore(void **state)
{
    struct fixture *f = *state;
    struct tn_cluster *a = &f->cluster;
    struct tn_cluster *b = &f->cluster2;
    struct proc_result r;
    char file[PATH_SIZE];
    tn_session *s1;
    tn_session *s2;
    tn_lock *l;
    void *buf = NULL;
    size_t len = 0;
    char *before;
    char *after;
    char *seen = NULL;
    uint64_t token;
    uint64_t restored_max;
    int leader_a;
    int leader_b;
    int status;
    int64_t deadline;
    int rc;

    leader_a = startCluster(a, 3, NULL);
    f->admin = openClient(clusterRpcEndpoints(a));
    s1 = openSession(f->admin, "snap-one");
    s2 = openSession(f->admin, "snap-two");
    for (int i = 0; i < 5; i++) {
        char res[32];
        snprintf(res, sizeof res, "snap/x%d", i);
        tn_lock_free(mustAcquire(i % 2 ? s2 : s1, res, NULL));
    }
    tn_lock_free(
        mustAcquire(s1, "snap/shared",
                    &(struct tn_acquire_opts){ .mode = TN_MODE_SHARED }));
    tn_lock_free(
        mustAcquire(s2, "snap/shared",
                    &(struct tn_acquire_opts){ .mode = TN_MODE_SHARED }));
    tn_lock_free(mustAcquire(
        s1, "snap/sem",
        &(struct tn_acquire_opts){ .mode = TN_MODE_SEMAPHORE, .permits = 3 }));
    tn_lock_free(mustAcquire(
        s2, "snap/sem",
        &(struct tn_acquire_opts){ .mode = TN_MODE_SEMAPHORE, .permits = 3 }));
    l = mustAcquire(s1, "snap/released", NULL);
    assert_int_equal(tn_lock_release(l), TN_OK);
    tn_lock_free(l);
    l = mustAcquire(s2, "snap/released", NULL); /* generation 2 */
    tn_lock_free(l);
    status = httpAcquire(clusterHttpPort(a, (leader_a + 1) % 3),
                         "snap/http%20lock", "snap-http", &token, NULL);
    assert_int_equal(status, 201);

    /* Save twice: the library, then tenurectl into a file. */
    rc = tn_snapshot_save(f->admin, &buf, &len);
    if (rc != TN_OK) {
        fail_msg("tn_snapshot_save: %s (%s)", tn_errname(rc), errmsg(f->admin));
    }
    assert_true(len > 0);
    tn_free(buf);
    snprintf(file, sizeof file, "%s/backup.snap", f->tmp);
    CTL(f, clusterRpcEndpoints(a), &r, "snapshot", "save", file);
    if (r.status != 0 || strstr(r.out, "saved") == NULL) {
        fail_msg("tenurectl snapshot save: exit %d, out '%s', err '%s'",
                 r.status, r.out, r.err);
    }
    before = lockList(clusterHttpPort(a, leader_a), "", false, &status);
    if (before == NULL) {
        fail_msg("GET /v1/locks?prefix= on cluster A: %d", status);
    }
    assert_non_null(strstr(before, "\"count\":9"));
    /* The sessions are kept open but not needed any more; A goes away. */
    tn_session_abandon(s1);
    tn_session_abandon(s2);
    tn_client_close(f->admin);
    f->admin = NULL;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(clusterKill(a, i), 0);
    }

    /* A fresh cluster B; restore there. */
    leader_b = startCluster(b, 3, NULL);
    CTL(f, clusterRpcEndpoints(b), &r, "snapshot", "restore", file);
    if (r.status != 0 || strstr(r.out, "restored") == NULL) {
        fail_msg("tenurectl snapshot restore: exit %d, out '%s', err '%s'",
                 r.status, r.out, r.err);
    }
    leader_b = waitLeaderWhere(b, 15000, anyLeader, 0, "agreed on");
    after = lockList(clusterHttpPort(b, leader_b), "", false, &status);
    if (after == NULL || strcmp(after, before) != 0) {
        fail_msg(
            "after restore, cluster B lists (HTTP %d):\n  %s\ncluster A "
            "listed:\n  %s",
            status, after != NULL ? after : "(nothing)", before);
    }
    /* Every node of B, on its own state. */
    for (int i = 0; i < 3; i++) {
        deadline = nowMs() + 10000;
        for (;;) {
            free(seen);
            seen = lockList(clusterHttpPort(b, i), "", true, &status);
            if (seen != NULL && strcmp(seen, before) == 0) {
                break;
            }
            if (nowMs() >= deadline) {
                fail_msg(
                    "node %d of B (stale) after restore:\n  %s\nA "
                    "listed:\n  %s",
                    clusterNodeId(i), seen != NULL ? seen : "(none)", before);
            }
            sleepMs(100);
        }
    }
    free(seen);

    /* Restored locks are held; new grants get larger tokens. */
    restored_max = maxToken(before);
    status = httpAcquire(clusterHttpPort(b, leader_b), "snap/x0", "intruder",
                         NULL, NULL);
    assert_int_equal(status, 409);
    status = httpAcquire(clusterHttpPort(b, leader_b), "snap/new", "newcomer",
                         &token, NULL);
    assert_int_equal(status, 201);
    if (token <= restored_max) {
        fail_msg("new grant on B has token %" PRIu64
                 ", not above the largest restored token %" PRIu64,
                 token, restored_max);
    }

    /* B is no longer empty: a second restore is refused, nothing changes. */
    f->admin = openClient(clusterRpcEndpoints(b));
    {
        char *bytes = clusterReadFile(file);
        struct stat st;
        assert_int_equal(stat(file, &st), 0);
        assert_non_null(bytes);
        rc = tn_snapshot_restore(f->admin, bytes, (size_t)st.st_size);
        free(bytes);
    }
    if (rc == TN_OK) {
        fail_msg("a restore into a cluster that holds locks returned OK");
    }
    fprintf(stderr, "snapshot: second restore refused: %s (%s)\n",
            tn_errname(rc), errmsg(f->admin));
    free(after);
    after = lockList(clusterHttpPort(b, leader_b), "snap/x", false, &status);
    assert_non_null(after);
    assert_non_null(strstr(after, "\"count\":5"));
    free(after);
    free(before);
    clusterPassed(a);
}

/* -------------------------------------------------------- disk guard */

static void expectNoSpace507(int status,
                             struct http_response *hr,
                             int node_id,
                             const char *what)
{
    char needle[32];
    json_t *j;
    const char *type;
    const char *detail;
    if (status != 507) {
        fail_msg("%s: HTTP %d, expected 507; body: %s", what, status,
                 hr->body != NULL ? hr->body : "");
    }
    if (hr->content_type == NULL ||
        strstr(hr->content_type, "application/problem+json") == NULL) {
        fail_msg("%s: 507 with Content-Type %s", what,
                 hr->content_type != NULL ? hr->content_type : "(none)");
    }
    j = json_loads(hr->body, 0, NULL);
    assert_non_null(j);
    type = json_string_value(json_object_get(j, "type"));
    detail = json_string_value(json_object_get(j, "detail"));
    snprintf(needle, sizeof needle, "node %d ", node_id);
    if (type == NULL || strstr(type, "no-space") == NULL || detail == NULL ||
        strstr(detail, needle) == NULL) {
        fail_msg(
            "%s: 507 body does not have type no-space and name '%s': "
            "%s",
            what, needle, hr->body);
    }
    json_decref(j);
}

/* A node of one below --min-free-disk: acquires answer 507 naming it
 * (HTTP) / NO_SPACE (library), new sessions too; releases and session
 * close still work. */
static void test_disk_guard_single_node(void **state)
{
    struct fixture *f = *state;
    struct tn_cluster *c = &f->cluster;
    struct http_response hr;
    tn_session *s;
    tn_session *s2 = NULL;
    tn_lock *l;
    tn_lock *l2 = NULL;
    uint64_t http_token;
    int status;
    int rc;

    startCluster(c, 1, NULL);
    f->admin = openClient(clusterRpcEndpoints(c));
    s = openSession(f->admin, "disk-lib");
    l = mustAcquire(s, "disk/lib", NULL);
    assert_int_equal(httpAcquire(clusterHttpPort(c, 0), "disk/http",
                                 "disk-http", &http_token, NULL),
                     201);

    /* The same node again, with a threshold above any free space. */
    restartWith(
        c, 0, (const char *const[]){ "--min-free-disk", HUGE_FREE_DISK, NULL });
    waitLeaderWhere(c, 20000, anyLeader, 0, "after the restart");

    status =
        httpAcquire(clusterHttpPort(c, 0), "disk/new", "disk-http2", NULL, &hr);
    expectNoSpace507(status, &hr, 1, "HTTP acquire on a node short of disk");
    httpResponseFree(&hr);
    rc = tn_lock_acquire(s, "disk/new-lib", NULL, &l2);
    if (rc != TN_NO_SPACE || strstr(errmsg(f->admin), "node 1 ") == NULL) {
        fail_msg(
            "library acquire on a node short of disk: %s (%s), expected "
            "NO_SPACE naming node 1",
            tn_errname(rc), errmsg(f->admin));
    }
    rc = tn_session_open(f->admin, "disk-new", 10000, NULL, &s2);
    if (rc != TN_NO_SPACE) {
        if (s2 != NULL) {
            tn_session_abandon(s2);
        }
        fail_msg(
            "session open on a node short of disk: %s (%s), expected "
            "NO_SPACE",
            tn_errname(rc), errmsg(f->admin));
    }

    /* Holders can still give their locks back. */
    status = httpRelease(clusterHttpPort(c, 0), "disk/http", http_token);
    if (status != 204) {
        fail_msg("HTTP release on a node short of disk: %d, expected 204",
                 status);
    }
    rc = tn_lock_release(l);
    if (rc != TN_OK) {
        fail_msg("library release on a node short of disk: %s (%s)",
                 tn_errname(rc), errmsg(f->admin));
    }
    tn_lock_free(l);
    {
        char *list = lockList(clusterHttpPort(c, 0), "disk/", false, &status);
        assert_non_null(list);
        if (strstr(list, "\"count\":0") == NULL) {
            fail_msg("locks left after the releases: %s", list);
        }
        free(list);
    }
    rc = tn_session_close(s);
    if (rc != TN_OK) {
        fail_msg("session close on a node short of disk: %s (%s)",
                 tn_errname(rc), errmsg(f->admin));
    }
    clusterPassed(c);
}

static bool stateIsLeader(int port)
{
    json_t *j = NULL;
    bool leader =
        httpJson(port, "GET", "/v1/cluster", NULL, NULL, &j, NULL) == 200 &&
        strcmp(json_string_value(json_object_get(j, "state")) ?: "",
               "leader") == 0;
    json_decref(j);
    return leader;
}

/* A 3-node cluster where only a follower is short of disk refuses writes
 * cluster-wide (through any node), names that follower, still releases;
 * made leader, the low node hands leadership on; back to normal, the
 * alarm clears. */
static void test_disk_guard_follower_alarm(void **state)
{
    struct fixture *f = *state;
    struct tn_cluster *c = &f->cluster;
    struct http_response hr;
    tn_session *s;
    tn_lock *l;
    tn_lock *l2 = NULL;
    int leader;
    int low;
    int other;
    int status = 0;
    int probes = 0;
    int64_t t0;
    int64_t deadline;
    bool was_leader = false;
    int rc;

    leader = startCluster(c, 3, NULL);
    low = (leader + 1) % 3;
    other = (leader + 2) % 3;
    f->admin = openClient(clusterRpcEndpoints(c));
    s = openSession(f->admin, "disk-follower");
    l = mustAcquire(s, "diskc/held", NULL);

    restartWith(
        c, low,
        (const char *const[]){ "--min-free-disk", HUGE_FREE_DISK, NULL });
    /* From the low node's start, writes through the third node stop
     * within a couple of seconds. */
    t0 = nowMs();
    deadline = t0 + 8000;
    for (;;) {
        char res[48];
        uint64_t token = 0;
        snprintf(res, sizeof res, "diskc/probe-%d", probes++);
        status =
            httpAcquire(clusterHttpPort(c, other), res, "probe", &token, &hr);
        if (status == 507) {
            break;
        }
        httpResponseFree(&hr);
        if (status == 201) {
            assert_int_equal(httpRelease(clusterHttpPort(c, other), res, token),
                             204);
        }
        if (nowMs() >= deadline) {
            fail_msg(
                "writes still accepted (last HTTP %d) 8 s after node %d "
                "started short of disk",
                status, clusterNodeId(low));
        }
        sleepMs(100);
    }
    fprintf(stderr,
            "disk: writes refused %" PRId64
            " ms after node %d "
            "restarted short of disk (%d probes)\n",
            nowMs() - t0, clusterNodeId(low), probes);
    if (nowMs() - t0 > 5000) {
        fail_msg("the cluster-wide alarm took %" PRId64 " ms (more than 5 s)",
                 nowMs() - t0);
    }
    expectNoSpace507(status, &hr, clusterNodeId(low),
                     "HTTP acquire through a healthy follower");
    httpResponseFree(&hr);
    /* Through the leader, the library: NO_SPACE naming the low node. */
    status = httpAcquire(clusterHttpPort(c, leader), "diskc/via-leader",
                         "probe", NULL, &hr);
    expectNoSpace507(status, &hr, clusterNodeId(low),
                     "HTTP acquire through the leader");
    httpResponseFree(&hr);
    rc = tn_lock_acquire(s, "diskc/lib", NULL, &l2);
    {
        char needle[32];
        snprintf(needle, sizeof needle, "node %d ", clusterNodeId(low));
        if (rc != TN_NO_SPACE || strstr(errmsg(f->admin), needle) == NULL) {
            fail_msg(
                "library acquire with a low follower: %s (%s), expected "
                "NO_SPACE naming node %d",
                tn_errname(rc), errmsg(f->admin), clusterNodeId(low));
        }
    }
    /* It lasts (the follower keeps reporting). */
    sleepMs(3500);
    status = httpAcquire(clusterHttpPort(c, other), "diskc/later", "probe",
                         NULL, &hr);
    expectNoSpace507(status, &hr, clusterNodeId(low),
                     "HTTP acquire 3.5 s later");
    httpResponseFree(&hr);
    /* Release still works. */
    rc = tn_lock_release(l);
    if (rc != TN_OK) {
        fail_msg("release with a low follower: %s (%s)", tn_errname(rc),
                 errmsg(f->admin));
    }
    tn_lock_free(l);

    /* Made leader, the low node hands leadership over. */
    rc = tn_leader_transfer(f->admin, (uint64_t)clusterNodeId(low));
    if (rc != TN_OK) {
        fail_msg("transfer to the low node %d: %s (%s)", clusterNodeId(low),
                 tn_errname(rc), errmsg(f->admin));
    }
    deadline = nowMs() + 15000;
    for (;;) {
        int now_leader;
        was_leader = was_leader || stateIsLeader(clusterHttpPort(c, low));
        now_leader = agreedLeader(c);
        if (clusterFileContains(c->nodes[low].log_path,
                         "disk space low: handing leadership over") &&
            now_leader >= 0 && now_leader != low) {
            break;
        }
        if (nowMs() >= deadline) {
            fail_msg(
                "node %d, short of disk, did not hand leadership over "
                "within 15 s of becoming leader (seen leading: %s; "
                "agreed leader now: %d)",
                clusterNodeId(low), was_leader ? "yes" : "no",
                now_leader >= 0 ? clusterNodeId(now_leader) : -1);
        }
        sleepMs(50);
    }

    /* Back to the default threshold: the alarm clears. */
    restartWith(c, low, (const char *const[]){ NULL });
    t0 = nowMs();
    deadline = t0 + 15000;
    for (;;) {
        uint64_t token = 0;
        status = httpAcquire(clusterHttpPort(c, other), "diskc/after", "probe",
                             &token, NULL);
        if (status == 201) {
            assert_int_equal(
                httpRelease(clusterHttpPort(c, other), "diskc/after", token),
                204);
            break;
        }
        if (nowMs() >= deadline) {
            fail_msg(
                "writes still refused (HTTP %d) 15 s after node %d came "
                "back with enough disk",
                status, clusterNodeId(low));
        }
        sleepMs(200);
    }
    fprintf(stderr,
            "disk: writes accepted again %" PRId64
            " ms after the "
            "restart\n",
            nowMs() - t0);
    assert_int_equal(tn_session_close(s), TN_OK);
    clusterPassed(c);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setUp, tearDown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_config_errors),
        T(test_grow_and_shrink_under_load),
        T(test_replace_killed_member),
        T(test_transfer_under_load),
        T(test_sigterm_leader_under_load),
        T(test_snapshot_save_restore),
        T(test_disk_guard_single_node),
        T(test_disk_guard_follower_alarm),
    };
    const char *only = getenv("TENURE_TEST_FILTER");
    signal(SIGPIPE, SIG_IGN);
    if (only != NULL && *only != '\0') {
        cmocka_set_test_filter(only); /* e.g. "*transfer*" */
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
