/* tenure fault harness: the coordinator's state (environment, nodes,
 * faults, findings). */
#ifndef TN_FAULT_COORD_H_
#define TN_FAULT_COORD_H_

#include "fault.h"

#define MAX_WORKERS 8
#define MAX_FAULTS 1024
#define MAX_NOTES 256

enum fault_kind {
    F_KILL_LEADER = 0,
    F_KILL_FOLLOWER,
    F_PAUSE_LEADER,
    F_PAUSE_HOLDER,
    F_ISOLATE_LEADER,
    F_SPLIT,
    F_RESTART_ALL,
    F_DISK_FULL,
    F_CORRUPT,
    F_KIND_COUNT
};

const char *faultName(int kind);

struct fnode
{
    int idx;
    int id;
    char ip[20];
    int raft_port;
    int rpc_port;
    int http_port;
    pid_t pid;           /* > 0 while running */
    bool paused;         /* SIGSTOPped by the nemesis */
    bool down;           /* kept down by the nemesis: do not restart */
    int starts;
    char netns[24];
    char veth[24];
    char mnt[FAULT_PATH];  /* loop mount point ("" if none) */
    char img[FAULT_PATH];
    char data_dir[FAULT_PATH];
    char log_path[FAULT_PATH];
};

struct fworker
{
    pid_t pid;
    bool lib;
    bool paused;
    char history[FAULT_PATH];
    char log_path[FAULT_PATH];
};

struct fault_rec
{
    int kind;
    char what[200];
    int64_t t_inject;
    int64_t t_heal;
    int64_t recovery_ms; /* -1: did not recover within the bound */
    int sessions_lost;   /* library sessions expired until the next fault */
};

/* Something the harness saw that is not a history violation: a crash, a
 * missing disk guard, a corrupt file accepted... */
struct note
{
    bool failure; /* counts against the run */
    char text[480];
};

struct env
{
    /* configuration */
    uint64_t seed;
    int n_nodes;
    int n_faults;
    int duration_s;      /* when n_faults == 0: run faults until this */
    bool long_profile;
    const char *profile;
    int ttl_ms;
    int recovery_bound_ms;
    unsigned only_mask;  /* bit per fault kind; 0: all */
    bool keep;
    bool verbose;
    int snapshot_threshold;
    char tenured[FAULT_PATH];
    char self[FAULT_PATH];

    /* capabilities */
    bool netns;
    bool nft;
    bool loop;
    char why_no_netns[200];
    char why_no_nft[200];
    char why_no_loop[200];

    /* environment */
    char tag[16];         /* "tf" + hex pid */
    char root[FAULT_PATH];
    char bridge[24];
    char subnet[20];      /* "10.213.N" */
    char host_ip[20];
    bool bridge_made;
    char initial[512];
    char rpc_endpoints[512];
    char http_list[512];
    char store_path[FAULT_PATH];

    struct fnode nodes[FAULT_MAX_NODES];
    struct fworker workers[MAX_WORKERS];
    int n_workers;

    struct fault_rec faults[MAX_FAULTS];
    int n_fault_recs;
    struct note notes[MAX_NOTES];
    int n_notes;
    int crashes;
    int external;
    int64_t t_start;
    struct rng rng;
};

/* env.c */
int envDetect(struct env *e);
int envSetup(struct env *e);
void envTeardown(struct env *e);
void envSweep(void);
int nodeStart(struct env *e, int i);
void nodeKill(struct env *e, int i);
/* SIGTERM, wait; a node still running after @timeout_ms is a finding
 * (with its stacks from gdb) and is killed. Returns the wait status or
 * -1. */
int nodeTerm(struct env *e, int i, int timeout_ms);
/* Writes every thread's stack of node i (gdb) to the run dir and stderr;
 * @summary gets the function names. */
void nodeStacks(struct env *e, int i, char *summary, size_t len);
void nodePause(struct env *e, int i, bool pause);
bool nodeRunning(struct env *e, int i);
/* Notes nodes that exited on their own; restarts them unless down.
 * Returns how many crashed since the last call. */
int superviseNodes(struct env *e);
/* Sleeps @ms while supervising. */
void idle(struct env *e, int ms);
/* Index of the node that is leader (highest term among those claiming
 * it), or -1. If @agreed, only when every reachable node names it. */
int findLeader(struct env *e, bool agreed, int timeout_ms);
int partition(struct env *e, const bool *side_a);
int healNetwork(struct env *e);
/* Waits (bounded) for node i's process to exit; returns its wait status,
 * or -1 if it is still running. */
int nodeWaitExit(struct env *e, int i, int timeout_ms);
bool nodeHealthy(struct env *e, int i, int timeout_ms);

void addNote(struct env *e, bool failure, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* nemesis.c */
int runSchedule(struct env *e);
/* Waits until the cluster serves again (leader agreed on, probe acquire
 * and release through library and HTTP); returns ms or -1. */
int64_t waitRecovery(struct env *e, int bound_ms);
int probeInit(struct env *e);
void probeClose(void);

/* check.c */
struct final_lock
{
    char resource[STORE_RES_MAX];
    uint64_t token;
};

struct check_input
{
    struct env *e;
    const struct store_entry *store;
    size_t n_store;
    struct final_lock *final_locks;
    size_t n_final;
    bool final_ok;
    struct final_lock *http_anchors;
    size_t n_http_anchors;
    bool http_ok;
};

struct check_result
{
    long ops;
    long grants;
    long writes_accepted;
    long writes_rejected;
    long violations;
    long sessions_lost; /* library sessions the cluster expired */
};

int checkHistory(const struct check_input *in, struct check_result *out);
/* Runs the checker on synthetic histories with known violations. */
int checkSelfTest(void);

#endif /* TN_FAULT_COORD_H_ */
