/* tenure fault harness: the nemesis (a seeded schedule of faults) and the
 * recovery probe. */
#include "coord.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "tenure.h"

#define DISK_LEAVE_MB 4
#define DISK_GRACE_MS 2500
#define DISK_LOW_MS 6000
#define DISK_FULL_MS 3000
#define CORRUPT_WAIT_MS 20000

extern volatile int g_abort;

static const char *const fault_names[F_KIND_COUNT] = {
    "kill-leader",    "kill-follower", "pause-leader",
    "pause-holder",   "isolate-leader", "split",
    "restart-all",    "disk-full",     "corrupt",
};

const char *faultName(int kind)
{
    return kind >= 0 && kind < F_KIND_COUNT ? fault_names[kind] : "?";
}

/* --------------------------------------------------------------- probe */

static tn_client *probe;
static unsigned probe_seq;

int probeInit(struct env *e)
{
    struct tn_client_opts o;
    memset(&o, 0, sizeof o);
    o.timeout_ms = 2000;
    o.connect_timeout_ms = 500;
    char err[TN_ERRMSG_BUF_SIZE];
    if (tn_client_open2(e->rpc_endpoints, &o, &probe, err) != TN_OK) {
        flog("probe client: %s", err);
        return -1;
    }
    return 0;
}

void probeClose(void)
{
    if (probe != NULL) {
        tn_client_close(probe);
        probe = NULL;
    }
}

tn_client *probeClient(void);
tn_client *probeClient(void)
{
    return probe;
}

/* One round trip through the library: session, acquire, release. */
static bool probeLib(char *why, size_t len)
{
    tn_session *s = NULL;
    int rc = tn_session_open(probe, "fault-probe", 2000, NULL, &s);
    if (rc != TN_OK) {
        strf(why, len, "session: %s", tn_errname(rc));
        return false;
    }
    char res[64];
    strf(res, sizeof res, "probe/%u", probe_seq++);
    tn_lock *l = NULL;
    rc = tn_lock_acquire(s, res, NULL, &l);
    if (rc == TN_OK) {
        rc = tn_lock_release(l);
        tn_lock_free(l);
        if (rc != TN_OK) {
            strf(why, len, "release: %s", tn_errname(rc));
        }
    } else {
        strf(why, len, "acquire: %s", tn_errname(rc));
    }
    tn_session_close(s);
    return rc == TN_OK;
}

/* One round trip through the HTTP shim of node @i. */
static bool probeHttp(struct env *e, int i, char *why, size_t len)
{
    struct fnode *n = &e->nodes[i];
    char path[64];
    strf(path, sizeof path, "/v1/locks/probe-http/%u", probe_seq++);
    struct hresp r;
    int st = hRequest(n->ip, n->http_port, "PUT", path, NULL,
                      "{\"holder\":\"fault-probe\",\"ttl_ms\":2000}", 3000,
                      &r);
    char etag[64];
    strf(etag, sizeof etag, "%s", r.etag);
    if (st != 201) {
        strf(why, len, "PUT via node %d: %d %s", n->id, st,
                 st > 0 ? "" : r.error);
        hFree(&r);
        return false;
    }
    hFree(&r);
    char hdr[96];
    strf(hdr, sizeof hdr, "If-Match: \"%s\"", etag);
    st = hRequest(n->ip, n->http_port, "DELETE", path, hdr, NULL, 3000, &r);
    hFree(&r);
    if (st != 204) {
        strf(why, len, "DELETE via node %d: %d", n->id, st);
        return false;
    }
    return true;
}

int64_t waitRecovery(struct env *e, int bound_ms)
{
    int64_t t0 = nowUs();
    int64_t until = t0 + (int64_t)bound_ms * 1000;
    char why[200] = "no leader";
    while (nowUs() < until && !g_abort) {
        superviseNodes(e);
        int leader = findLeader(e, true, 800);
        if (leader < 0) {
            strf(why, sizeof why, "no leader agreed on by every node");
            sleepMs(100);
            continue;
        }
        if (!probeLib(why, sizeof why)) {
            sleepMs(100);
            continue;
        }
        int via = (int)rngRange(&e->rng, 0, e->n_nodes - 1);
        for (int k = 0; k < e->n_nodes; k++) {
            int i = (via + k) % e->n_nodes;
            if (e->nodes[i].pid > 0 && !e->nodes[i].paused) {
                via = i;
                break;
            }
        }
        if (!probeHttp(e, via, why, sizeof why)) {
            sleepMs(100);
            continue;
        }
        return (nowUs() - t0) / 1000;
    }
    flog("no recovery within %d ms: %s", bound_ms, why);
    return -1;
}

/* ----------------------------------------------------------- helpers */

static int pickFollower(struct env *e, int leader)
{
    int cand[FAULT_MAX_NODES];
    int n = 0;
    for (int i = 0; i < e->n_nodes; i++) {
        if (i != leader && e->nodes[i].pid > 0) {
            cand[n++] = i;
        }
    }
    return n ? cand[rngRange(&e->rng, 0, n - 1)] : -1;
}

static int currentLeader(struct env *e)
{
    for (int k = 0; k < 40 && !g_abort; k++) {
        int l = findLeader(e, false, 800);
        if (l >= 0) {
            return l;
        }
        idle(e, 100);
    }
    return -1;
}

/* ------------------------------------------------------------- faults */

struct fault_ctx
{
    struct env *e;
    struct fault_rec *rec;
};

static void faultKill(struct fault_ctx *c, bool leader_victim)
{
    struct env *e = c->e;
    int leader = currentLeader(e);
    int v = leader_victim ? leader : pickFollower(e, leader);
    if (v < 0) {
        strf(c->rec->what, sizeof c->rec->what, "no victim");
        return;
    }
    int down_ms = (int)rngRange(&e->rng, 500, 4000);
    strf(c->rec->what, sizeof c->rec->what,
             "kill -9 node %d (%s), down %d ms", e->nodes[v].id,
             v == leader ? "leader" : "follower", down_ms);
    flog("inject: %s", c->rec->what);
    c->rec->t_inject = nowUs();
    e->nodes[v].down = true;
    nodeKill(e, v);
    idle(e, down_ms);
    nodeStart(e, v);
}

static void faultPauseLeader(struct fault_ctx *c)
{
    struct env *e = c->e;
    int v = currentLeader(e);
    if (v < 0) {
        strf(c->rec->what, sizeof c->rec->what, "no leader");
        return;
    }
    int ms = (int)rngRange(&e->rng, e->ttl_ms * 12 / 10, e->ttl_ms * 2);
    strf(c->rec->what, sizeof c->rec->what,
             "SIGSTOP leader node %d for %d ms (TTL %d)", e->nodes[v].id, ms,
             e->ttl_ms);
    flog("inject: %s", c->rec->what);
    c->rec->t_inject = nowUs();
    nodePause(e, v, true);
    idle(e, ms);
    nodePause(e, v, false);
}

static void faultPauseHolder(struct fault_ctx *c)
{
    struct env *e = c->e;
    int cand[MAX_WORKERS];
    int n = 0;
    for (int w = 0; w < e->n_workers; w++) {
        if (e->workers[w].lib && e->workers[w].pid > 0) {
            cand[n++] = w;
        }
    }
    if (n == 0) {
        strf(c->rec->what, sizeof c->rec->what, "no worker");
        return;
    }
    int w = cand[rngRange(&e->rng, 0, n - 1)];
    int ms = (int)rngRange(&e->rng, e->ttl_ms * 13 / 10, e->ttl_ms * 5 / 2);
    strf(c->rec->what, sizeof c->rec->what,
             "SIGSTOP holder process (worker %d, pid %d) for %d ms (TTL %d)",
             w, (int)e->workers[w].pid, ms, e->ttl_ms);
    flog("inject: %s", c->rec->what);
    c->rec->t_inject = nowUs();
    kill(e->workers[w].pid, SIGSTOP);
    e->workers[w].paused = true;
    idle(e, ms);
    if (e->workers[w].pid > 0) {
        kill(e->workers[w].pid, SIGCONT);
    }
    e->workers[w].paused = false;
}

static void faultPartition(struct fault_ctx *c, bool isolate_leader)
{
    struct env *e = c->e;
    int leader = currentLeader(e);
    bool side[FAULT_MAX_NODES] = { false };
    char desc[120] = "";
    size_t off = 0;
    if (isolate_leader) {
        if (leader < 0) {
            strf(c->rec->what, sizeof c->rec->what, "no leader");
            return;
        }
        side[leader] = true;
    } else {
        int minority = (int)rngRange(&e->rng, 1, (e->n_nodes - 1) / 2);
        bool leader_in_minority = leader >= 0 && rngPct(&e->rng, 50);
        int placed = 0;
        if (leader_in_minority) {
            side[leader] = true;
            placed++;
        }
        while (placed < minority) {
            int i = (int)rngRange(&e->rng, 0, e->n_nodes - 1);
            if (!side[i] && i != leader) {
                side[i] = true;
                placed++;
            }
        }
    }
    for (int i = 0; i < e->n_nodes; i++) {
        if (side[i]) {
            off += (size_t)snprintf(desc + off, sizeof desc - off, "%s%d",
                                    off ? "," : "", e->nodes[i].id);
        }
    }
    int ms = (int)rngRange(&e->rng, 1500, 2 * e->ttl_ms + 1000);
    strf(c->rec->what, sizeof c->rec->what,
             "partition {%s} from the rest%s for %d ms", desc,
             leader >= 0 && side[leader] ? " (leader in minority)"
                                         : " (leader in majority)",
             ms);
    flog("inject: %s", c->rec->what);
    c->rec->t_inject = nowUs();
    if (partition(e, side) != 0) {
        addNote(e, true, "could not install the partition (nft)");
    }
    idle(e, ms);
    healNetwork(e);
}

static void faultRestartAll(struct fault_ctx *c)
{
    struct env *e = c->e;
    bool graceful = rngPct(&e->rng, 30);
    int ms = (int)rngRange(&e->rng, 300, 2500);
    strf(c->rec->what, sizeof c->rec->what,
             "restart of the whole cluster (%s), down %d ms",
             graceful ? "SIGTERM" : "kill -9", ms);
    flog("inject: %s", c->rec->what);
    c->rec->t_inject = nowUs();
    for (int i = 0; i < e->n_nodes; i++) {
        e->nodes[i].down = true;
    }
    for (int i = 0; i < e->n_nodes; i++) {
        if (e->nodes[i].pid <= 0) {
            continue; /* never kill(0, ...): that is our process group */
        }
        if (graceful) {
            kill(e->nodes[i].pid, SIGTERM);
        } else {
            nodeKill(e, i);
        }
    }
    if (graceful) {
        for (int i = 0; i < e->n_nodes; i++) {
            int st = nodeWaitExit(e, i, 15000);
            if (st < 0) {
                char stacks[400];
                nodeStacks(e, i, stacks, sizeof stacks);
                addNote(e, true,
                        "node %d ignored SIGTERM for 15 s (killed); stacks: "
                        "%s",
                        e->nodes[i].id, stacks);
                nodeKill(e, i);
            } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                addNote(e, true,
                        "node %d did not exit cleanly on SIGTERM (status "
                        "0x%x)",
                        e->nodes[i].id, (unsigned)st);
            }
        }
    }
    idle(e, ms);
    for (int i = 0; i < e->n_nodes; i++) {
        nodeStart(e, i);
    }
}

/* ---------------------------------------------------------- full disk */

static int64_t freeBytes(const char *path)
{
    struct statvfs sv;
    if (statvfs(path, &sv) != 0) {
        return -1;
    }
    return (int64_t)sv.f_bavail * (int64_t)sv.f_frsize;
}

/* Grows @fd's file by up to @bytes. */
static void fillBy(int fd, int64_t bytes)
{
    if (bytes <= 0) {
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return;
    }
    if (posix_fallocate(fd, st.st_size, bytes) != 0) {
        /* Fill what fits, in 64 KiB steps. */
        while (bytes > 0 &&
               posix_fallocate(fd, st.st_size, 65536) == 0) {
            st.st_size += 65536;
            bytes -= 65536;
        }
    }
}

static bool logMentionsDisk(const char *path)
{
    char *tail = readTail(path, 1 << 20);
    bool found = false;
    if (tail == NULL) {
        return false;
    }
    char *save = NULL;
    for (char *line = strtok_r(tail, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if ((strstr(line, "level=warn") || strstr(line, "level=error")) &&
            (strstr(line, "disk") || strstr(line, "space") ||
             strstr(line, "NOSPC") || strstr(line, "NOSPACE"))) {
            found = true;
        }
    }
    free(tail);
    return found;
}

struct disk_obs
{
    int accepted_as_leader; /* 201 through the victim while it led */
    int refused;            /* a clear no-space refusal */
    int other;
    char first_refusal[160];
    char other_example[160];
};

static void diskProbe(struct env *e, int v, bool judge, struct disk_obs *o)
{
    static unsigned seq;
    struct fnode *n = &e->nodes[v];
    if (n->pid <= 0) {
        return;
    }
    bool led_before = findLeader(e, false, 500) == v;
    char path[64];
    strf(path, sizeof path, "/v1/locks/disk-probe/%u", seq++);
    struct hresp r;
    int st = hRequest(n->ip, n->http_port, "PUT", path, NULL,
                      "{\"holder\":\"disk-probe\",\"ttl_ms\":2000}", 3000, &r);
    bool led_after = findLeader(e, false, 500) == v;
    if (st == 201) {
        if (judge && led_before && led_after) {
            o->accepted_as_leader++;
        }
        char hdr[96];
        strf(hdr, sizeof hdr, "If-Match: \"%s\"", r.etag);
        struct hresp d;
        hRequest(n->ip, n->http_port, "DELETE", path, hdr, NULL, 3000, &d);
        hFree(&d);
    } else if ((st == 507 || st == 503) && r.body != NULL &&
               strstr(r.body, "no-space") != NULL) {
        if (o->refused++ == 0) {
            strf(o->first_refusal, sizeof o->first_refusal, "%d %.140s",
                     st, r.body);
        }
    } else if (judge) {
        if (o->other++ == 0) {
            strf(o->other_example, sizeof o->other_example, "%d %.140s",
                     st, st > 0 && r.body ? r.body : r.error);
        }
    }
    hFree(&r);
}

static void faultDisk(struct fault_ctx *c)
{
    struct env *e = c->e;
    int v = currentLeader(e);
    if (v < 0) {
        strf(c->rec->what, sizeof c->rec->what, "no leader");
        return;
    }
    struct fnode *n = &e->nodes[v];
    if (n->mnt[0] == '\0') {
        strf(c->rec->what, sizeof c->rec->what,
                 "skipped: node %d has no size-limited disk", n->id);
        return;
    }
    char filler[FAULT_PATH];
    strf(filler, sizeof filler, "%s/filler", n->mnt);
    int fd = open(filler, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        strf(c->rec->what, sizeof c->rec->what, "cannot create %s",
                 filler);
        return;
    }
    int64_t before = freeBytes(n->mnt);
    strf(c->rec->what, sizeof c->rec->what,
             "fill the data disk of leader node %d to %d MiB free (of %lld "
             "MiB free), then to 0",
             n->id, DISK_LEAVE_MB, (long long)(before >> 20));
    flog("inject: %s", c->rec->what);
    c->rec->t_inject = nowUs();
    fillBy(fd, before - ((int64_t)DISK_LEAVE_MB << 20));
    flog("disk: node %d now has %lld KiB free", n->id,
         (long long)(freeBytes(n->mnt) >> 10));

    struct disk_obs o;
    memset(&o, 0, sizeof o);
    int starts = n->starts;
    int64_t t_fill = nowUs();
    while (nowUs() - t_fill < (int64_t)DISK_LOW_MS * 1000 && !g_abort) {
        bool judge = nowUs() - t_fill >= (int64_t)DISK_GRACE_MS * 1000;
        diskProbe(e, v, judge, &o);
        idle(e, 200);
    }
    bool alive_low = n->pid > 0 && n->starts == starts;
    bool leads_low = findLeader(e, false, 800) == v;
    flog("disk: low phase: %d writes accepted by node %d as leader after "
         "%d ms, %d no-space refusals, %d other answers, still leader: %s, "
         "alive: %s",
         o.accepted_as_leader, n->id, DISK_GRACE_MS, o.refused, o.other,
         leads_low ? "yes" : "no", alive_low ? "yes" : "no");

    /* Completely full. */
    fillBy(fd, freeBytes(n->mnt));
    for (int k = 0; k < 64; k++) {
        char small[FAULT_PATH];
        strf(small, sizeof small, "%s/filler.%d", n->mnt, k);
        int sfd = open(small, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (sfd < 0) {
            break;
        }
        char buf[4096];
        memset(buf, 0xab, sizeof buf);
        bool full = false;
        for (int b = 0; b < 256; b++) {
            if (write(sfd, buf, sizeof buf) != (ssize_t)sizeof buf) {
                full = true;
                break;
            }
        }
        close(sfd);
        if (full) {
            break;
        }
    }
    flog("disk: node %d now has %lld KiB free", n->id,
         (long long)(freeBytes(n->mnt) >> 10));
    int64_t t_full = nowUs();
    struct disk_obs full;
    memset(&full, 0, sizeof full);
    while (nowUs() - t_full < (int64_t)DISK_FULL_MS * 1000 && !g_abort) {
        diskProbe(e, v, true, &full);
        idle(e, 200);
    }
    bool alive_full = n->pid > 0 && n->starts == starts;

    /* Space returns. */
    close(fd);
    unlink(filler);
    for (int k = 0; k < 64; k++) {
        char small[FAULT_PATH];
        strf(small, sizeof small, "%s/filler.%d", n->mnt, k);
        unlink(small);
    }
    sync();
    bool mentions = logMentionsDisk(n->log_path);

    if (o.accepted_as_leader > 0 && o.refused == 0) {
        addNote(e, true,
                "disk guard: leader node %d accepted %d writes with only %d "
                "MiB free on its data disk (no no-space refusal, no "
                "leadership hand-off); it should refuse writes before the "
                "disk is full",
                n->id, o.accepted_as_leader, DISK_LEAVE_MB);
    } else if (o.refused > 0) {
        addNote(e, false, "disk guard: node %d refused writes while low: %s",
                n->id, o.first_refusal);
    } else if (!leads_low && alive_low) {
        addNote(e, false,
                "disk guard: node %d handed leadership off while low on disk",
                n->id);
    }
    if (!alive_low || !alive_full) {
        addNote(e, true,
                "disk: node %d %s while its disk was %s (it must refuse "
                "writes, not stop)",
                n->id, n->pid > 0 ? "was restarted (it had exited)" : "exited",
                alive_low ? "completely full" : "low");
    }
    if (full.accepted_as_leader > 0) {
        addNote(e, true,
                "disk: leader node %d acknowledged %d writes with a "
                "completely full data disk",
                n->id, full.accepted_as_leader);
    }
    if (!mentions) {
        addNote(e, true,
                "disk: node %d logged no warning or error about disk space",
                n->id);
    }
    if (o.other + full.other > 0) {
        flog("disk: example of another answer: %s",
             o.other ? o.other_example : full.other_example);
    }
}

/* --------------------------------------------------------- corruption */

enum corrupt_kind {
    C_SEG_FLIP = 0,
    C_SEG_TRUNC,
    C_OPEN_FLIP,
    C_SNAP_FLIP,
    C_SNAP_TRUNC,
    C_META_FLIP,
    C_KIND_COUNT
};

static const char *const corrupt_names[C_KIND_COUNT] = {
    "flip bytes in a closed segment", "truncate a closed segment",
    "flip bytes in an open segment",  "flip bytes in a snapshot",
    "truncate a snapshot",            "flip bytes in a snapshot's .meta",
};

/* Finds a file of the kind in @dir (the newest snapshot, the largest
 * segment); returns 0 and its path. */
static int findTarget(const char *dir, int kind, char *out, size_t len)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return -1;
    }
    struct dirent *de;
    off_t best_size = 0;
    unsigned long long best_term = 0;
    unsigned long long best_index = 0;
    char best[256] = "";
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        bool match = false;
        unsigned long long a, b;
        char tail;
        switch (kind) {
            case C_SEG_FLIP:
            case C_SEG_TRUNC:
                match = sscanf(nm, "%llu-%llu%c", &a, &b, &tail) == 2;
                break;
            case C_OPEN_FLIP:
                match = strncmp(nm, "open-", 5) == 0;
                break;
            case C_SNAP_FLIP:
            case C_SNAP_TRUNC:
                match = strncmp(nm, "snapshot-", 9) == 0 &&
                        strstr(nm, ".meta") == NULL;
                break;
            case C_META_FLIP:
                match = strncmp(nm, "snapshot-", 9) == 0 &&
                        strstr(nm, ".meta") != NULL;
                break;
            default:
                break;
        }
        if (!match) {
            continue;
        }
        char path[FAULT_PATH];
        strf(path, sizeof path, "%s/%s", dir, nm);
        struct stat st;
        if (stat(path, &st) != 0 || st.st_size < 16) {
            continue;
        }
        off_t used = st.st_size;
        if (kind == C_OPEN_FLIP) {
            /* Open segments are preallocated: measure the written part. */
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            used = 0;
            if (fd >= 0) {
                char buf[65536];
                off_t off = 0;
                ssize_t got;
                while ((got = pread(fd, buf, sizeof buf, off)) > 0) {
                    for (ssize_t i = 0; i < got; i++) {
                        if (buf[i] != 0) {
                            used = off + i + 1;
                        }
                    }
                    off += got;
                    if (off - used > (off_t)1 << 20) {
                        break; /* a megabyte of zeros: the end */
                    }
                }
                close(fd);
            }
            if (used < 64) {
                continue;
            }
        }
        /* Snapshots: the newest by (term, index), the one raft loads (an
         * older one is ignored and deleted: corrupting it proves nothing);
         * segments and open segments: the one with the most data. */
        bool better;
        if (kind == C_SNAP_FLIP || kind == C_SNAP_TRUNC ||
            kind == C_META_FLIP) {
            unsigned long long t = 0, x = 0;
            sscanf(nm, "snapshot-%llu-%llu", &t, &x);
            better = best[0] == '\0' || t > best_term ||
                     (t == best_term && x > best_index);
            if (better) {
                best_term = t;
                best_index = x;
            }
        } else {
            better = used > best_size;
        }
        if (better) {
            best_size = used;
            strf(best, sizeof best, "%s", nm);
        }
    }
    closedir(d);
    if (best[0] == '\0') {
        return -1;
    }
    strf(out, len, "%s/%s", dir, best);
    return (int)best_size;
}

static int corruptFile(struct env *e, const char *path, int kind, int used,
                       char *desc, size_t len)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        return -1;
    }
    off_t size = kind == C_OPEN_FLIP ? used : st.st_size;
    if (kind == C_SEG_TRUNC || kind == C_SNAP_TRUNC) {
        off_t to = (off_t)rngRange(&e->rng, 8, (int64_t)size - 1);
        if (truncate(path, to) != 0) {
            return -1;
        }
        strf(desc, len, "truncated %s from %lld to %lld bytes", path,
                 (long long)size, (long long)to);
        return 0;
    }
    /* Flip 4 bytes past the 8-byte format header. */
    off_t lo = size > 24 ? 8 : 0;
    off_t hi = size - 4;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    if (kind == C_META_FLIP) {
        /* A .meta is: format, crc, configuration index, configuration
         * length (8 bytes each, little endian), then the configuration,
         * padded to 8 bytes. The padding carries no data: flipping it
         * proves nothing, so stay inside the configuration. */
        unsigned char lenb[8];
        if (pread(fd, lenb, sizeof lenb, 24) == (ssize_t)sizeof lenb) {
            uint64_t conf_len = 0;
            for (int i = 7; i >= 0; i--) {
                conf_len = conf_len << 8 | lenb[i];
            }
            if (conf_len >= 4 && 32 + (off_t)conf_len <= size) {
                hi = 32 + (off_t)conf_len - 4;
            }
        }
    }
    off_t at = (off_t)rngRange(&e->rng, lo, (int64_t)hi);
    unsigned char b[4];
    if (pread(fd, b, sizeof b, at) != (ssize_t)sizeof b) {
        close(fd);
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        b[i] ^= 0x5a;
    }
    int rv = pwrite(fd, b, sizeof b, at) == (ssize_t)sizeof b ? 0 : -1;
    fsync(fd);
    close(fd);
    strf(desc, len, "flipped 4 bytes at offset %lld of %s (%lld bytes)",
             (long long)at, path, (long long)size);
    return rv;
}

static void faultCorrupt(struct fault_ctx *c)
{
    struct env *e = c->e;
    int leader = currentLeader(e);
    int v = pickFollower(e, leader);
    if (v < 0) {
        strf(c->rec->what, sizeof c->rec->what, "no follower");
        return;
    }
    struct fnode *n = &e->nodes[v];
    int kind = (int)rngRange(&e->rng, 0, C_KIND_COUNT - 1);
    c->rec->t_inject = nowUs();
    n->down = true;
    int st = nodeTerm(e, v, 15000);
    if (st > 0) {
        addNote(e, true, "node %d did not stop cleanly on SIGTERM (0x%x)",
                n->id, (unsigned)st);
    }
    char target[FAULT_PATH];
    int used = -1;
    for (int k = 0; k < C_KIND_COUNT; k++) {
        used = findTarget(n->data_dir, (kind + k) % C_KIND_COUNT, target,
                          sizeof target);
        if (used >= 0) {
            kind = (kind + k) % C_KIND_COUNT;
            break;
        }
    }
    if (used < 0) {
        strf(c->rec->what, sizeof c->rec->what,
                 "no file to corrupt on node %d", n->id);
        nodeStart(e, v);
        return;
    }
    char backup[FAULT_PATH];
    strf(backup, sizeof backup, "%s/backup-n%d", e->root, n->id);
    removeTree(backup);
    if (copyTree(n->data_dir, backup) != 0) {
        addNote(e, true, "could not back up %s", n->data_dir);
        nodeStart(e, v);
        return;
    }
    char desc[FAULT_PATH + 100];
    if (corruptFile(e, target, kind, used, desc, sizeof desc) != 0) {
        addNote(e, true, "could not corrupt %s", target);
    }
    strf(c->rec->what, sizeof c->rec->what, "%s of stopped node %d",
             corrupt_names[kind], n->id);
    flog("inject: %s: %s", c->rec->what, desc);
    struct stat lst;
    off_t log_from = stat(n->log_path, &lst) == 0 ? lst.st_size : 0;

    nodeStart(e, v);
    int64_t until = nowUs() + (int64_t)CORRUPT_WAIT_MS * 1000;
    int status = -1;
    bool healthy = false;
    while (nowUs() < until && !g_abort) {
        status = nodeWaitExit(e, v, 100);
        if (status >= 0) {
            break;
        }
        if (nodeHealthy(e, v, 500)) {
            /* Serving: give it a moment to fail a deferred load. */
            healthy = true;
            idle(e, 1500);
            status = nodeWaitExit(e, v, 100);
            break;
        }
    }
    /* The message of this start: the log from where it was. */
    char msg[300] = "";
    bool lsan = false;
    int lfd = open(n->log_path, O_RDONLY | O_CLOEXEC);
    if (lfd >= 0) {
        char buf[16384];
        ssize_t got = pread(lfd, buf, sizeof buf - 1, log_from);
        close(lfd);
        if (got > 0) {
            buf[got] = '\0';
            lsan = strstr(buf, "LeakSanitizer") != NULL;
            char *save = NULL;
            for (char *line = strtok_r(buf, "\n", &save); line != NULL;
                 line = strtok_r(NULL, "\n", &save)) {
                if (strstr(line, "cannot start") ||
                    strstr(line, "tenured:") ||
                    strstr(line, "level=error") ||
                    strstr(line, "level=warn")) {
                    strf(msg, sizeof msg, "%s", line);
                }
            }
        }
    }
    if (status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        bool clear = msg[0] != '\0';
        addNote(e, !clear, "corruption (%s): node %d refused to start (exit "
                "%d)%s %s",
                corrupt_names[kind], n->id, WEXITSTATUS(status),
                clear ? ", saying:" : " WITHOUT a clear message", msg);
    } else if (status >= 0) {
        addNote(e, true, "corruption (%s): node %d crashed at start (wait "
                "status 0x%x%s) instead of refusing with a message; %s",
                corrupt_names[kind], n->id, (unsigned)status,
                lsan ? ", LeakSanitizer: the cannot-start path leaks" : "",
                msg);
    } else {
        /* What does it serve? Compare its membership with the truth. */
        char member[160] = "membership not readable";
        struct hresp r;
        if (hRequest(n->ip, n->http_port, "GET", "/v1/cluster", NULL, NULL,
                     2000, &r) == 200) {
            json_t *j = json_loads(r.body, 0, NULL);
            json_t *ms = j ? json_object_get(j, "members") : NULL;
            strf(member, sizeof member, "membership intact");
            for (size_t k = 0; k < json_array_size(ms); k++) {
                json_t *m = json_array_get(ms, k);
                json_int_t id = json_integer_value(json_object_get(m, "id"));
                const char *ra =
                    json_string_value(json_object_get(m, "raft_address"));
                char want[64] = "?";
                if (id >= 1 && id <= e->n_nodes) {
                    strf(want, sizeof want, "%s:%d", e->nodes[id - 1].ip,
                         e->nodes[id - 1].raft_port);
                }
                if (ra == NULL || strcmp(ra, want) != 0) {
                    strf(member, sizeof member,
                         "it reports member %lld at \"%.40s\" (truly %s)",
                         (long long)id, ra ? ra : "(none)", want);
                    break;
                }
            }
            json_decref(j);
        }
        hFree(&r);
        addNote(e, true,
                "corruption (%s): node %d STARTED%s with a corrupt data dir "
                "(%s) instead of refusing; %s; its log says: %s",
                corrupt_names[kind], n->id, healthy ? " and served" : "",
                desc, member,
                msg[0] ? msg : "nothing (no warning, no error)");
        /* It has run on that data (voted, appended): putting the backup
         * back now would roll its persisted state back, which Raft does
         * not allow. Leave it running as it is. */
        removeTree(backup);
        n->down = false;
        return;
    }
    /* Repair: the data as it was before the corruption. */
    removeTree(n->data_dir);
    if (copyTree(backup, n->data_dir) != 0) {
        addNote(e, true, "could not restore %s", n->data_dir);
    }
    removeTree(backup);
    nodeStart(e, v);
}

/* ------------------------------------------------------------ schedule */

static bool kindEnabled(struct env *e, int kind)
{
    if (e->only_mask != 0 && (e->only_mask & (1u << kind)) == 0) {
        return false;
    }
    if ((kind == F_ISOLATE_LEADER || kind == F_SPLIT) && !e->nft) {
        return false;
    }
    if (kind == F_DISK_FULL && !e->loop) {
        return false;
    }
    return true;
}

int runSchedule(struct env *e)
{
    int kinds[MAX_FAULTS];
    int n = 0;
    if (!e->long_profile) {
        /* Short: every enabled kind once, in seeded order. */
        for (int k = 0; k < F_KIND_COUNT; k++) {
            if (kindEnabled(e, k)) {
                kinds[n++] = k;
            }
        }
        for (int i = n - 1; i > 0; i--) {
            int j = (int)rngRange(&e->rng, 0, i);
            int t = kinds[i];
            kinds[i] = kinds[j];
            kinds[j] = t;
        }
        if (e->n_faults > 0 && e->n_faults < n) {
            n = e->n_faults;
        }
    } else {
        /* Long: seeded draws; the slow kinds (disk, corruption, whole
         * restarts) weigh half as much as the others. */
        int weights[F_KIND_COUNT];
        int total = 0;
        for (int k = 0; k < F_KIND_COUNT; k++) {
            weights[k] = !kindEnabled(e, k) ? 0
                         : (k == F_DISK_FULL || k == F_CORRUPT ||
                            k == F_RESTART_ALL)
                             ? 1
                             : 2;
            total += weights[k];
        }
        if (total == 0) {
            return 0;
        }
        int want = e->n_faults > 0 ? e->n_faults : MAX_FAULTS;
        for (; n < want && n < MAX_FAULTS; n++) {
            int r = (int)rngRange(&e->rng, 0, total - 1);
            int k = 0;
            while (r >= weights[k]) {
                r -= weights[k];
                k++;
            }
            kinds[n] = k;
        }
    }
    int64_t stop_at =
        e->duration_s > 0 ? e->t_start + (int64_t)e->duration_s * 1000000 : 0;
    for (int i = 0; i < n && !g_abort; i++) {
        if (stop_at != 0 && nowUs() >= stop_at) {
            break;
        }
        idle(e, (int)rngRange(&e->rng, 800, 2000));
        struct fault_rec *rec = &e->faults[e->n_fault_recs++];
        memset(rec, 0, sizeof *rec);
        rec->kind = kinds[i];
        struct fault_ctx c = { .e = e, .rec = rec };
        switch (kinds[i]) {
            case F_KILL_LEADER:
                faultKill(&c, true);
                break;
            case F_KILL_FOLLOWER:
                faultKill(&c, false);
                break;
            case F_PAUSE_LEADER:
                faultPauseLeader(&c);
                break;
            case F_PAUSE_HOLDER:
                faultPauseHolder(&c);
                break;
            case F_ISOLATE_LEADER:
                faultPartition(&c, true);
                break;
            case F_SPLIT:
                faultPartition(&c, false);
                break;
            case F_RESTART_ALL:
                faultRestartAll(&c);
                break;
            case F_DISK_FULL:
                faultDisk(&c);
                break;
            case F_CORRUPT:
                faultCorrupt(&c);
                break;
            default:
                break;
        }
        if (rec->t_inject == 0) {
            flog("fault #%d (%s) not injected: %s", i + 1,
                 faultName(kinds[i]), rec->what);
            e->n_fault_recs--;
            continue;
        }
        for (int k = 0; k < e->n_nodes; k++) {
            e->nodes[k].down = false;
        }
        rec->t_heal = nowUs();
        rec->recovery_ms = waitRecovery(e, e->recovery_bound_ms);
        flog("fault #%d %s healed; recovered in %lld ms", e->n_fault_recs,
             faultName(kinds[i]), (long long)rec->recovery_ms);
    }
    return 0;
}
