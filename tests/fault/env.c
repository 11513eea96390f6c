/* tenure fault harness: the environment (network namespaces, packet
 * filters, loop-mounted disks) and the tenured processes. */
#include "coord.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define RAFT_PORT 7001
#define RPC_PORT 7101
#define HTTP_PORT 7201
#define DISK_MB 128

void addNote(struct env *e, bool failure, const char *fmt, ...)
{
    if (e->n_notes == MAX_NOTES) {
        return;
    }
    struct note *n = &e->notes[e->n_notes++];
    n->failure = failure;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n->text, sizeof n->text, fmt, ap);
    va_end(ap);
    flog("%s: %s", failure ? "FINDING" : "note", n->text);
}

/* -------------------------------------------------------- capabilities */

static bool pidAlive(long pid)
{
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

int envDetect(struct env *e)
{
    char out[512];
    char probe[32];
    strf(probe, sizeof probe, "%sp", e->tag);
    if (geteuid() != 0) {
        strf(e->why_no_netns, sizeof e->why_no_netns,
                 "not root (network namespaces need CAP_NET_ADMIN)");
        strf(e->why_no_loop, sizeof e->why_no_loop,
                 "not root (loop mounts need CAP_SYS_ADMIN)");
    } else {
        if (!haveProgram("ip")) {
            strf(e->why_no_netns, sizeof e->why_no_netns,
                     "no 'ip' program (iproute2)");
        } else if (runCmdf(out, sizeof out, "ip netns add %s", probe) != 0) {
            strf(e->why_no_netns, sizeof e->why_no_netns,
                     "'ip netns add' failed: %.150s", out);
        } else {
            char veth[32];
            strf(veth, sizeof veth, "%sx", e->tag);
            if (runCmdf(out, sizeof out,
                        "ip link add %s type veth peer name eth0 netns %s",
                        veth, probe) != 0) {
                strf(e->why_no_netns, sizeof e->why_no_netns,
                         "cannot create veth links: %.150s", out);
            } else {
                e->netns = true;
                runCmdf(NULL, 0, "ip link del %s", veth);
            }
            if (!haveProgram("nft")) {
                strf(e->why_no_nft, sizeof e->why_no_nft,
                         "no 'nft' program (Debian package nftables; "
                         "deploy/setup.sh installs it)");
            } else if (runCmdf(out, sizeof out,
                               "ip netns exec %s nft add table inet probe",
                               probe) != 0) {
                strf(e->why_no_nft, sizeof e->why_no_nft,
                         "nft does not work in a namespace: %.150s", out);
            } else {
                e->nft = true;
            }
            runCmdf(NULL, 0, "ip netns del %s", probe);
        }
        if (!haveProgram("mkfs.ext4") || !haveProgram("mount")) {
            strf(e->why_no_loop, sizeof e->why_no_loop,
                     "no mkfs.ext4 or mount");
        } else {
            char img[FAULT_PATH];
            char mnt[FAULT_PATH];
            strf(img, sizeof img, "%s/probe.img", e->root);
            strf(mnt, sizeof mnt, "%s/probe.mnt", e->root);
            mkdirP(mnt, 0755);
            int fd = open(img, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fd < 0 || ftruncate(fd, 8 << 20) != 0) {
                strf(e->why_no_loop, sizeof e->why_no_loop,
                         "cannot create an image file");
            } else if (runCmdf(out, sizeof out, "mkfs.ext4 -q -F -m 0 %s",
                               img) != 0) {
                strf(e->why_no_loop, sizeof e->why_no_loop,
                         "mkfs.ext4 failed: %.150s", out);
            } else if (runCmdf(out, sizeof out, "mount -o loop %s %s", img,
                               mnt) != 0) {
                strf(e->why_no_loop, sizeof e->why_no_loop,
                         "loop mount not permitted: %.150s", out);
            } else {
                e->loop = true;
                runCmdf(NULL, 0, "umount %s", mnt);
            }
            if (fd >= 0) {
                close(fd);
            }
            unlink(img);
            rmdir(mnt);
        }
    }
    if (!e->netns) {
        strf(e->why_no_nft, sizeof e->why_no_nft,
                 "no network namespaces (%s)", e->why_no_netns);
    }
    return 0;
}

/* ---------------------------------------------------------------- sweep */

/* Parses "tf<hex pid>..." and tells whether that process is gone. */
static bool staleName(const char *name)
{
    if (strncmp(name, "tf", 2) != 0) {
        return false;
    }
    char hex[8];
    int k = 0;
    for (const char *p = name + 2; k < 6; p++, k++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
            return false;
        }
        hex[k] = *p;
    }
    hex[6] = '\0';
    return !pidAlive(strtol(hex, NULL, 16));
}

void envSweep(void)
{
    DIR *d = opendir("/run/netns");
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (staleName(de->d_name)) {
                fprintf(stderr, "sweep: removing netns %s\n", de->d_name);
                runCmdf(NULL, 0, "ip netns del %s", de->d_name);
            }
        }
        closedir(d);
    }
    char out[65536];
    if (runCmdf(out, sizeof out, "ip -o link show") == 0) {
        char *save = NULL;
        for (char *line = strtok_r(out, "\n", &save); line != NULL;
             line = strtok_r(NULL, "\n", &save)) {
            char name[64];
            if (sscanf(line, "%*d: %63[^:@ ]", name) == 1 &&
                staleName(name)) {
                fprintf(stderr, "sweep: removing link %s\n", name);
                runCmdf(NULL, 0, "ip link del %s", name);
            }
        }
    }
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0') {
        tmp = "/tmp";
    }
    FILE *m = fopen("/proc/mounts", "r");
    if (m != NULL) {
        char line[1024];
        char prefix[FAULT_PATH];
        strf(prefix, sizeof prefix, "%s/tenure-fault-", tmp);
        while (fgets(line, sizeof line, m) != NULL) {
            char dev[512];
            char mp[512];
            if (sscanf(line, "%511s %511s", dev, mp) != 2 ||
                strncmp(mp, prefix, strlen(prefix)) != 0) {
                continue;
            }
            long pid = strtol(mp + strlen(prefix), NULL, 10);
            if (!pidAlive(pid)) {
                fprintf(stderr, "sweep: unmounting %s\n", mp);
                runCmdf(NULL, 0, "umount -l %s", mp);
            }
        }
        fclose(m);
    }
    d = opendir(tmp);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strncmp(de->d_name, "tenure-fault-", 13) != 0) {
                continue;
            }
            long pid = strtol(de->d_name + 13, NULL, 10);
            char path[FAULT_PATH];
            char mark[FAULT_PATH];
            strf(path, sizeof path, "%s/%s", tmp, de->d_name);
            strf(mark, sizeof mark, "%s/KEEP", path);
            if (!pidAlive(pid) && access(mark, F_OK) != 0) {
                fprintf(stderr, "sweep: removing %s\n", path);
                removeTree(path);
            }
        }
        closedir(d);
    }
}

/* ---------------------------------------------------------------- setup */

static int pickFreePort(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sin;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0 &&
        getsockname(fd, (struct sockaddr *)&sin, &len) == 0) {
        port = ntohs(sin.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

static int pickSubnet(struct env *e)
{
    char out[65536];
    if (runCmdf(out, sizeof out, "ip -o -4 addr show") != 0) {
        out[0] = '\0';
    }
    int start = (int)(getpid() % 240);
    for (int k = 0; k < 240; k++) {
        int n = 10 + (start + k) % 240;
        char probe[32];
        strf(probe, sizeof probe, " 10.213.%d.", n);
        if (strstr(out, probe) == NULL) {
            strf(e->subnet, sizeof e->subnet, "10.213.%d", n);
            return 0;
        }
    }
    return -1;
}

static int setupNetwork(struct env *e)
{
    char out[512];
    if (pickSubnet(e) != 0) {
        flog("no free 10.213.N.0/24 subnet");
        return -1;
    }
    strf(e->bridge, sizeof e->bridge, "%sbr", e->tag);
    strf(e->host_ip, sizeof e->host_ip, "%s.254", e->subnet);
    if (runCmdf(out, sizeof out, "ip link add %s type bridge", e->bridge)) {
        flog("ip link add bridge: %s", out);
        return -1;
    }
    e->bridge_made = true;
    if (runCmdf(out, sizeof out, "ip addr add %s/24 dev %s", e->host_ip,
                e->bridge) ||
        runCmdf(out, sizeof out, "ip link set %s up", e->bridge)) {
        flog("bridge address: %s", out);
        return -1;
    }
    for (int i = 0; i < e->n_nodes; i++) {
        struct fnode *n = &e->nodes[i];
        strf(n->netns, sizeof n->netns, "%sn%d", e->tag, n->id);
        strf(n->veth, sizeof n->veth, "%sv%d", e->tag, n->id);
        strf(n->ip, sizeof n->ip, "%s.%d", e->subnet, n->id);
        if (runCmdf(out, sizeof out, "ip netns add %s", n->netns) ||
            runCmdf(out, sizeof out,
                    "ip link add %s type veth peer name eth0 netns %s",
                    n->veth, n->netns) ||
            runCmdf(out, sizeof out, "ip link set %s master %s up", n->veth,
                    e->bridge) ||
            runCmdf(out, sizeof out, "ip -n %s addr add %s/24 dev eth0",
                    n->netns, n->ip) ||
            runCmdf(out, sizeof out, "ip -n %s link set eth0 up", n->netns) ||
            runCmdf(out, sizeof out, "ip -n %s link set lo up", n->netns)) {
            flog("namespace of node %d: %s", n->id, out);
            return -1;
        }
        n->raft_port = RAFT_PORT;
        n->rpc_port = RPC_PORT;
        n->http_port = HTTP_PORT;
    }
    return 0;
}

static int setupDisk(struct env *e, struct fnode *n)
{
    char out[512];
    strf(n->img, sizeof n->img, "%s/n%d.img", e->root, n->id);
    strf(n->mnt, sizeof n->mnt, "%s/n%d.mnt", e->root, n->id);
    mkdirP(n->mnt, 0755);
    int fd = open(n->img, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)DISK_MB << 20) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        flog("image %s: %s", n->img, strerror(errno));
        n->mnt[0] = '\0';
        return -1;
    }
    close(fd);
    if (runCmdf(out, sizeof out, "mkfs.ext4 -q -F -m 0 %s", n->img) ||
        runCmdf(out, sizeof out, "mount -o loop %s %s", n->img, n->mnt)) {
        flog("disk of node %d: %s", n->id, out);
        n->mnt[0] = '\0';
        return -1;
    }
    strf(n->data_dir, sizeof n->data_dir, "%s/data", n->mnt);
    return 0;
}

int envSetup(struct env *e)
{
    size_t ic = 0;
    size_t ep = 0;
    size_t hl = 0;
    for (int i = 0; i < e->n_nodes; i++) {
        e->nodes[i].idx = i;
        e->nodes[i].id = i + 1;
    }
    if (e->netns && setupNetwork(e) != 0) {
        return -1;
    }
    for (int i = 0; i < e->n_nodes; i++) {
        struct fnode *n = &e->nodes[i];
        if (!e->netns) {
            strf(n->ip, sizeof n->ip, "127.0.0.1");
            n->raft_port = pickFreePort();
            n->rpc_port = pickFreePort();
            n->http_port = pickFreePort();
            if (n->raft_port < 0 || n->rpc_port < 0 || n->http_port < 0) {
                flog("no free ports");
                return -1;
            }
        }
        strf(n->data_dir, sizeof n->data_dir, "%s/n%d", e->root, n->id);
        if (e->loop && (e->only_mask == 0 ||
                        (e->only_mask & (1u << F_DISK_FULL)) != 0)) {
            if (setupDisk(e, n) != 0) {
                return -1;
            }
        }
        strf(n->log_path, sizeof n->log_path, "%s/n%d.log", e->root,
                 n->id);
        if (mkdirP(n->data_dir, 0700) != 0) {
            flog("mkdir %s: %s", n->data_dir, strerror(errno));
            return -1;
        }
        ic += (size_t)snprintf(e->initial + ic, sizeof e->initial - ic,
                               "%s%d=%s:%d", i ? "," : "", n->id, n->ip,
                               n->raft_port);
        ep += (size_t)snprintf(e->rpc_endpoints + ep,
                               sizeof e->rpc_endpoints - ep, "%s%s:%d",
                               i ? "," : "", n->ip, n->rpc_port);
        hl += (size_t)snprintf(e->http_list + hl, sizeof e->http_list - hl,
                               "%s%s:%d", i ? "," : "", n->ip, n->http_port);
    }
    return 0;
}

void envTeardown(struct env *e)
{
    for (int w = 0; w < e->n_workers; w++) {
        if (e->workers[w].pid > 0) {
            kill(e->workers[w].pid, SIGCONT);
            kill(e->workers[w].pid, SIGKILL);
            waitpid(e->workers[w].pid, NULL, 0);
            e->workers[w].pid = 0;
        }
    }
    for (int i = 0; i < e->n_nodes; i++) {
        if (e->nodes[i].pid > 0) {
            nodeKill(e, i);
        }
    }
    for (int i = 0; i < e->n_nodes; i++) {
        struct fnode *n = &e->nodes[i];
        if (n->mnt[0] != '\0') {
            if (runCmdf(NULL, 0, "umount %s", n->mnt) != 0) {
                runCmdf(NULL, 0, "umount -l %s", n->mnt);
            }
            n->mnt[0] = '\0';
        }
        if (n->netns[0] != '\0') {
            runCmdf(NULL, 0, "ip netns del %s", n->netns);
            n->netns[0] = '\0';
        }
        if (n->veth[0] != '\0') {
            runCmdf(NULL, 0, "ip link del %s", n->veth);
            n->veth[0] = '\0';
        }
    }
    if (e->bridge_made) {
        runCmdf(NULL, 0, "ip link del %s", e->bridge);
        e->bridge_made = false;
    }
    if (e->root[0] != '\0') {
        if (e->keep) {
            /* The sweep of later runs leaves a kept directory alone. */
            char mark[FAULT_PATH];
            strf(mark, sizeof mark, "%s/KEEP", e->root);
            int fd = open(mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
            if (fd >= 0) {
                close(fd);
            }
            flog("kept %s", e->root);
        } else {
            removeTree(e->root);
        }
        e->root[0] = '\0';
    }
}

/* ---------------------------------------------------------------- nodes */

int nodeStart(struct env *e, int i)
{
    struct fnode *n = &e->nodes[i];
    char id[16];
    char raft[48];
    char rpc[48];
    char http[48];
    char snap[16];
    strf(id, sizeof id, "%d", n->id);
    strf(raft, sizeof raft, "%s:%d", n->ip, n->raft_port);
    strf(rpc, sizeof rpc, "%s:%d", n->ip, n->rpc_port);
    strf(http, sizeof http, "%s:%d", n->ip, n->http_port);
    /* Staggered per node, as tenured does with its default, so that a
     * follower rarely snapshots while an InstallSnapshot arrives (a known
     * libraft 0.22.1 crash, RAFT-NOTES.md). */
    strf(snap, sizeof snap, "%d",
         e->snapshot_threshold + (n->id % 8) * e->snapshot_threshold / 3);
    const char *argv[24];
    int k = 0;
    argv[k++] = e->tenured;
    argv[k++] = "--id";
    argv[k++] = id;
    argv[k++] = "--data";
    argv[k++] = n->data_dir;
    argv[k++] = "--raft";
    argv[k++] = raft;
    argv[k++] = "--rpc";
    argv[k++] = rpc;
    argv[k++] = "--http";
    argv[k++] = http;
    argv[k++] = "--initial-cluster";
    argv[k++] = e->initial;
    if (e->snapshot_threshold > 0) {
        argv[k++] = "--snapshot-threshold";
        argv[k++] = snap;
    }
    const char *level = getenv("TENURE_FAULT_LOG_LEVEL");
    if (level != NULL && *level != '\0') {
        argv[k++] = "--log-level";
        argv[k++] = level;
    }
    argv[k] = NULL;

    int log = open(n->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                   0644);
    if (log < 0) {
        flog("open %s: %s", n->log_path, strerror(errno));
        return -1;
    }
    char line[256];
    int len = snprintf(line, sizeof line,
                       "=== fault harness: start #%d of node %d at %.3fs\n",
                       n->starts + 1, n->id,
                       (double)(nowUs() - e->t_start) / 1e6);
    if (writeAll(log, line, (size_t)len) != 0) {
        /* diagnostics only */
    }
    int nsfd = -1;
    if (n->netns[0] != '\0') {
        char path[FAULT_PATH];
        strf(path, sizeof path, "/run/netns/%s", n->netns);
        nsfd = open(path, O_RDONLY | O_CLOEXEC);
        if (nsfd < 0) {
            close(log);
            flog("open %s: %s", path, strerror(errno));
            return -1;
        }
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(log);
        if (nsfd >= 0) {
            close(nsfd);
        }
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        if (nsfd >= 0 && setns(nsfd, CLONE_NEWNET) != 0) {
            static const char msg[] = "=== setns failed\n";
            if (write(log, msg, sizeof msg - 1) < 0) {
                _exit(126);
            }
            _exit(126);
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
        execv(e->tenured, (char *const *)argv);
        _exit(127);
    }
    close(log);
    if (nsfd >= 0) {
        close(nsfd);
    }
    n->pid = pid;
    n->paused = false;
    n->down = false;
    n->starts++;
    return 0;
}

static int reapNode(struct env *e, int i, int timeout_ms)
{
    struct fnode *n = &e->nodes[i];
    int64_t until = nowUs() + (int64_t)timeout_ms * 1000;
    for (;;) {
        int status;
        pid_t rv = waitpid(n->pid, &status, WNOHANG);
        if (rv == n->pid) {
            n->pid = 0;
            return status;
        }
        if (rv < 0) {
            n->pid = 0;
            return 0;
        }
        if (nowUs() >= until) {
            return -1;
        }
        sleepMs(5);
    }
}

void nodeKill(struct env *e, int i)
{
    struct fnode *n = &e->nodes[i];
    if (n->pid <= 0) {
        return;
    }
    kill(n->pid, SIGKILL);
    kill(n->pid, SIGCONT);
    reapNode(e, i, 10000);
    n->paused = false;
}

void nodeStacks(struct env *e, int i, char *summary, size_t len)
{
    struct fnode *n = &e->nodes[i];
    summary[0] = '\0';
    if (n->pid <= 0 || !haveProgram("gdb")) {
        return;
    }
    char pid[16];
    strf(pid, sizeof pid, "%d", (int)n->pid);
    static char out[65536];
    const char *argv[] = { "gdb", "-p", pid, "-batch", "-ex",
                           "thread apply all bt", NULL };
    runCmd(argv, NULL, out, sizeof out, 30000);
    char path[FAULT_PATH];
    strf(path, sizeof path, "%s/n%d-stacks-%d.txt", e->root, n->id,
         n->starts);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (writeAll(fd, out, strlen(out)) != 0) {
            /* diagnostics only */
        }
        close(fd);
    }
    fprintf(stderr, "----- stacks of node %d (pid %s) -----\n", n->id, pid);
    /* Print the frames; summarise the thread that runs main(). */
    char cur[400] = "";
    size_t off = 0;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "Thread", 6) == 0) {
            fprintf(stderr, "%s\n", line);
            off = 0;
            cur[0] = '\0';
        } else if (line[0] == '#') {
            fprintf(stderr, "%s\n", line);
            char *in = strstr(line, " in ");
            const char *fn = in != NULL ? in + 4 : line + 4;
            char name[64];
            if (sscanf(fn, "%63[^ (]", name) == 1 && off + 70 < sizeof cur) {
                off += (size_t)snprintf(cur + off, sizeof cur - off, "%s%s",
                                        off ? " < " : "", name);
            }
            if (strcmp(name, "main") == 0) {
                strf(summary, len, "%s", cur);
            }
        }
    }
}

int nodeTerm(struct env *e, int i, int timeout_ms)
{
    struct fnode *n = &e->nodes[i];
    if (n->pid <= 0) {
        return -1;
    }
    kill(n->pid, SIGTERM);
    int status = reapNode(e, i, timeout_ms);
    if (status < 0) {
        char stacks[400];
        nodeStacks(e, i, stacks, sizeof stacks);
        addNote(e, true, "node %d ignored SIGTERM for %d ms (killed); "
                "stacks: %s", n->id, timeout_ms, stacks);
        nodeKill(e, i);
        return -1;
    }
    return status;
}

int nodeWaitExit(struct env *e, int i, int timeout_ms)
{
    if (e->nodes[i].pid <= 0) {
        return 0;
    }
    return reapNode(e, i, timeout_ms);
}

void nodePause(struct env *e, int i, bool pause)
{
    struct fnode *n = &e->nodes[i];
    if (n->pid > 0) {
        kill(n->pid, pause ? SIGSTOP : SIGCONT);
        n->paused = pause;
    }
}

bool nodeRunning(struct env *e, int i)
{
    return e->nodes[i].pid > 0;
}

static void describeStatus(char *buf, size_t len, int status)
{
    if (WIFEXITED(status)) {
        strf(buf, len, "exit status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        strf(buf, len, "signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    } else {
        strf(buf, len, "wait status 0x%x", (unsigned)status);
    }
}

/* The last line of a node's log that looks like an error, for notes. */
static void lastErrorLine(const char *log_path, char *buf, size_t len)
{
    char *tail = readTail(log_path, 16384);
    buf[0] = '\0';
    if (tail == NULL) {
        return;
    }
    char *save = NULL;
    for (char *line = strtok_r(tail, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if (strstr(line, "level=error") != NULL ||
            strstr(line, "level=fatal") != NULL ||
            strstr(line, "tenured:") != NULL ||
            strstr(line, "Assertion") != NULL ||
            strstr(line, "AddressSanitizer") != NULL) {
            strf(buf, len, "%s", line);
        }
    }
    free(tail);
}

int superviseNodes(struct env *e)
{
    int crashed = 0;
    for (int i = 0; i < e->n_nodes; i++) {
        struct fnode *n = &e->nodes[i];
        if (n->pid <= 0) {
            if (!n->down) {
                /* Crashed earlier: the supervisor restarts it. */
                if (nodeStart(e, i) == 0) {
                    flog("supervisor: restarted node %d", n->id);
                }
            }
            continue;
        }
        int status;
        pid_t rv = waitpid(n->pid, &status, WNOHANG);
        if (rv != n->pid) {
            continue;
        }
        n->pid = 0;
        char what[96];
        char line[300];
        describeStatus(what, sizeof what, status);
        lastErrorLine(n->log_path, line, sizeof line);
        char *tail = readTail(n->log_path, 4096);
        bool termed = tail != NULL && strstr(tail, "msg=\"stopping\"") != NULL;
        free(tail);
        if ((WIFEXITED(status) && WEXITSTATUS(status) == 0 && termed) ||
            (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
            /* Not a crash: something else on this machine stopped it
             * (another test's cleanup, the OOM killer). */
            e->external++;
            addNote(e, false,
                    "node %d was stopped from outside the harness (%s) at "
                    "%.1fs; restarted",
                    n->id, what, (double)(nowUs() - e->t_start) / 1e6);
            continue;
        }
        crashed++;
        e->crashes++;
        addNote(e, true, "node %d exited on its own (%s) at %.1fs; log: %s",
                n->id, what, (double)(nowUs() - e->t_start) / 1e6,
                line[0] ? line : "(no error line)");
    }
    return crashed;
}

void idle(struct env *e, int ms)
{
    int64_t until = nowUs() + (int64_t)ms * 1000;
    while (nowUs() < until) {
        superviseNodes(e);
        int64_t left = (until - nowUs()) / 1000;
        sleepMs(left > 50 ? 50 : (int)(left > 0 ? left : 0));
    }
}

bool nodeHealthy(struct env *e, int i, int timeout_ms)
{
    struct fnode *n = &e->nodes[i];
    struct hresp r;
    int st = hRequest(n->ip, n->http_port, "GET", "/healthz", NULL, NULL,
                      timeout_ms, &r);
    hFree(&r);
    return st == 200;
}

int findLeader(struct env *e, bool agreed, int timeout_ms)
{
    int best = -1;
    long long best_term = -1;
    long long named[FAULT_MAX_NODES];
    bool answered[FAULT_MAX_NODES];
    for (int i = 0; i < e->n_nodes; i++) {
        struct fnode *n = &e->nodes[i];
        named[i] = 0;
        answered[i] = false;
        if (n->pid <= 0 || n->paused) {
            continue;
        }
        struct hresp r;
        int st = hRequest(n->ip, n->http_port, "GET", "/v1/cluster", NULL,
                          NULL, timeout_ms, &r);
        if (st == 200) {
            json_t *j = json_loads(r.body, 0, NULL);
            if (j != NULL) {
                answered[i] = true;
                json_t *lid = json_object_get(j, "leader_id");
                named[i] = json_is_integer(lid) ? json_integer_value(lid) : 0;
                const char *state =
                    json_string_value(json_object_get(j, "state"));
                long long term =
                    json_integer_value(json_object_get(j, "term"));
                if (state != NULL && strcmp(state, "leader") == 0 &&
                    term > best_term) {
                    best = i;
                    best_term = term;
                }
                json_decref(j);
            }
        }
        hFree(&r);
    }
    if (best < 0 || !agreed) {
        return best;
    }
    int votes = 0;
    for (int i = 0; i < e->n_nodes; i++) {
        struct fnode *n = &e->nodes[i];
        if (n->pid <= 0 || n->paused) {
            continue;
        }
        if (!answered[i] || named[i] != e->nodes[best].id) {
            return -1;
        }
        votes++;
    }
    return votes >= e->n_nodes / 2 + 1 ? best : -1;
}

/* --------------------------------------------------------- partitions */

static int nftApply(struct env *e, int i, const char *ruleset)
{
    char out[512];
    const char *argv[] = { "ip", "netns", "exec", e->nodes[i].netns,
                           "nft", "-f", "-", NULL };
    int rv = runCmd(argv, ruleset, out, sizeof out, 10000);
    if (rv != 0) {
        flog("nft in %s failed: %s", e->nodes[i].netns, out);
        return -1;
    }
    return 0;
}

int partition(struct env *e, const bool *side_a)
{
    int rv = 0;
    for (int i = 0; i < e->n_nodes; i++) {
        char set[256];
        size_t off = 0;
        for (int k = 0; k < e->n_nodes; k++) {
            if (side_a[k] != side_a[i]) {
                off += (size_t)snprintf(set + off, sizeof set - off, "%s%s",
                                        off ? ", " : "", e->nodes[k].ip);
            }
        }
        char rules[1024];
        if (off == 0) {
            strf(rules, sizeof rules, "flush ruleset\n");
        } else {
            strf(rules, sizeof rules,
                     "flush ruleset\n"
                     "table inet tnfault {\n"
                     "  chain input { type filter hook input priority 0; "
                     "policy accept; ip saddr { %s } drop; }\n"
                     "  chain output { type filter hook output priority 0; "
                     "policy accept; ip daddr { %s } drop; }\n"
                     "}\n",
                     set, set);
        }
        if (nftApply(e, i, rules) != 0) {
            rv = -1;
        }
    }
    return rv;
}

int healNetwork(struct env *e)
{
    int rv = 0;
    for (int i = 0; i < e->n_nodes; i++) {
        if (nftApply(e, i, "flush ruleset\n") != 0) {
            rv = -1;
        }
    }
    return rv;
}
