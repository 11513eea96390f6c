/* Test fixture: a cluster of real tenured processes on 127.0.0.1.
 *
 * Node indexes are 0-based (node i runs with --id i+1). Every wait is
 * bounded. The fixture never asserts: calls return -1 (or false) with the
 * reason in c->errmsg, so tests decide what is fatal.
 *
 *   struct tn_cluster *c = calloc(1, sizeof *c);
 *   if (clusterStart(c, 3) != 0) { fail_msg("%s", c->errmsg); }
 *   int leader = clusterWaitLeader(c, 10000);
 *   clusterKill(c, leader);
 *   ...
 *   clusterPassed(c);    // last line of a test that got this far
 *   clusterDestroy(c);   // in teardown; dumps node logs unless passed
 *
 * Environment:
 *   TENURE_BIN_DIR        where tenured is (set by ctest; default: the
 *                         directory of the test binary)
 *   TENURE_TEST_LOG_LEVEL --log-level for the daemons (default "info")
 *   TENURE_KEEP_CLUSTER=1 keep the temp dir (data and logs) after destroy
 *   TENURE_DUMP_LOGS=1    dump the node logs on destroy even after a pass */
#ifndef TN_TEST_CLUSTER_H_
#define TN_TEST_CLUSTER_H_

#include <stdbool.h>
#include <sys/types.h>

#define CLUSTER_MAX_NODES 7
#define CLUSTER_MAX_EXTRA_ARGS 16
#define CLUSTER_PATH_SIZE 256

struct tn_cluster_node
{
    int raft_port;
    int rpc_port;
    int http_port;
    pid_t pid;                         /* > 0 while running */
    int starts;                        /* times this node was started */
    char data_dir[CLUSTER_PATH_SIZE];  /* --data */
    char log_path[CLUSTER_PATH_SIZE];  /* stdout and stderr, appended */
    char exit_note[192];               /* how it last exited on its own */
    int exit_status;                   /* its wait status then, or -1 */
};

struct tn_cluster
{
    int n;                                  /* number of nodes */
    char root[CLUSTER_PATH_SIZE];           /* temp dir holding everything */
    char tenured[CLUSTER_PATH_SIZE];        /* path of the daemon */
    char initial_cluster[CLUSTER_MAX_NODES * 24];
    char rpc_endpoints[CLUSTER_MAX_NODES * 24];
    const char *extra_args[CLUSTER_MAX_EXTRA_ARGS + 1]; /* NULL-terminated */
    bool failed;  /* a fixture call failed or a node died on its own */
    bool passed;  /* set by clusterPassed() */
    char errmsg[512];
    struct tn_cluster_node nodes[CLUSTER_MAX_NODES];
};

/* Zeroes C, picks free ports, makes a fresh temp dir, starts N_NODES
 * daemons (1 <= n_nodes <= CLUSTER_MAX_NODES) bootstrapped with each other
 * as initial voters, and waits (bounded) until every /healthz answers 200.
 * When a node exits with an error status during start-up (e.g. a port was
 * taken meanwhile) the whole start is retried with new ports, up to 3 times;
 * a crash (signal) is not retried.
 * Returns 0, or -1 with c->errmsg (call clusterDestroy() either way). */
int clusterStart(struct tn_cluster *c, int n_nodes);

/* Same, appending EXTRA_ARGS (NULL-terminated, borrowed for the life of C,
 * may be NULL) to every daemon's command line. */
int clusterStartWith(struct tn_cluster *c,
                     int n_nodes,
                     const char *const *extra_args);

/* Waits until a node says it is the leader and every running node (at
 * least a majority of all nodes) reports it as leader in GET /v1/cluster,
 * so that any running node can serve or forward requests right away.
 * Returns its index, or -1 after TIMEOUT_MS with c->errmsg (which lists
 * what each node reported). */
int clusterWaitLeader(struct tn_cluster *c, int timeout_ms);

/* Waits until every running node answers GET /readyz with 200.
 * Returns 0 or -1 after TIMEOUT_MS. */
int clusterWaitReady(struct tn_cluster *c, int timeout_ms);

/* Waits until node I answers GET /healthz with 200 (0), or -1 when it exits
 * or TIMEOUT_MS passes. */
int clusterWaitHealthy(struct tn_cluster *c, int i, int timeout_ms);

/* kill -9 of node I and reap it. Returns 0, or -1 when not running. */
int clusterKill(struct tn_cluster *c, int i);

/* SIGTERM to node I, wait up to 10 s, then SIGKILL. Returns 0 when it
 * exited with status 0 on its own, -1 otherwise (not running, killed,
 * non-zero exit: see c->errmsg). */
int clusterStop(struct tn_cluster *c, int i);

/* Stops node I if it runs (clusterStop), starts it again with the same
 * flags and data dir, and waits for its /healthz. Returns 0 or -1. */
int clusterRestart(struct tn_cluster *c, int i);

/* True while node I's process runs (reaps it when it has exited; an exit
 * the fixture did not cause marks the cluster failed). */
bool clusterRunning(struct tn_cluster *c, int i);

/* "127.0.0.1:P1,127.0.0.1:P2,..." of every node's RPC port (borrowed). */
const char *clusterRpcEndpoints(const struct tn_cluster *c);

int clusterHttpPort(const struct tn_cluster *c, int i);
int clusterRpcPort(const struct tn_cluster *c, int i);
int clusterRaftPort(const struct tn_cluster *c, int i);

/* The node's id as given to --id (i + 1). */
int clusterNodeId(int i);

/* Marks the test as passed: clusterDestroy() then stays quiet. */
void clusterPassed(struct tn_cluster *c);

/* Marks the test as failed: clusterDestroy() dumps the logs. */
void clusterFailed(struct tn_cluster *c);

/* Writes the last LINES lines of every node's log to stderr. */
void clusterDumpLogs(const struct tn_cluster *c, int lines);

/* Kills every node, dumps the log tails unless clusterPassed() was called
 * (or when something failed), and removes the temp dir. Safe on a zeroed
 * struct, after a failed clusterStart(), and twice. */
void clusterDestroy(struct tn_cluster *c);

/* The whole file as a string (malloc'd), or NULL if it cannot be read. */
char *clusterReadFile(const char *path);

/* Whether the file (a node's log, say) can be read and contains @needle. */
bool clusterFileContains(const char *path, const char *needle);

#endif /* TN_TEST_CLUSTER_H_ */
