/* tnbench: shared declarations of the load generator (one libuv loop, one
 * thread, many clients; see docs/benchmarks.md). */
#ifndef TN_BENCH_H_
#define TN_BENCH_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <http_parser.h>
#include <uv.h>

#include "tenure.pb-c.h"

#define BENCH_MAX_EPS 8
#define BENCH_MAX_NODES 8
#define BENCH_ADDR_MAX 64
#define BENCH_RES_MAX 96

/* ------------------------------------------------------------ histogram */

/* Log-linear histogram of nanosecond values: 64 linear sub-buckets per
 * power of two (relative error below 1.6 %). */
#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist
{
    uint64_t count;
    uint64_t max;
    uint64_t sum;
    uint64_t b[HIST_BUCKETS];
};

void histRecord(struct hist *h, uint64_t ns);
uint64_t histPercentile(const struct hist *h, double p); /* p in [0,1] */
void histMerge(struct hist *into, const struct hist *from);

/* ---------------------------------------------------------------- grants */

/* One exclusive grant as seen by a client: the window [t_grant, t_end] is
 * inside the true holding interval whenever the service is correct
 * (t_grant: reply received; t_end: first send of the release, or the end of
 * the lease as the client computes it, whichever is earlier). */
struct grant
{
    uint32_t res;     /* resource number (the workload's own numbering) */
    uint32_t client;  /* client number */
    uint64_t token;
    uint64_t t_grant; /* ns, CLOCK_MONOTONIC */
    uint64_t t_end;   /* ns; UINT64_MAX while held */
};

struct grants
{
    struct grant *v;
    size_t n;
    size_t cap;
    size_t limit;   /* refuse to record more than this (memory bound) */
    uint64_t dropped;
};

/* Returns the index of the new record, or SIZE_MAX when over the limit. */
size_t grantsAdd(struct grants *g,
                 uint32_t res,
                 uint32_t client,
                 uint64_t token,
                 uint64_t t_grant);
void grantsEnd(struct grants *g, size_t i, uint64_t t_end);

struct safety
{
    uint64_t checked;
    uint64_t resources;
    uint64_t overlaps;        /* two holders at once */
    uint64_t token_order;     /* token not above the previous grant's */
    uint64_t duplicate_token; /* the same token granted twice */
};

/* Sorts the records and checks them; prints up to @show violations. */
void grantsCheck(struct grants *g, struct safety *out, int show);
int grantsSelfTest(void); /* 0: the checker finds planted violations */

/* ------------------------------------------------------------ processes */

struct proc_sample
{
    bool ok;
    uint64_t cpu_ticks; /* utime + stime */
    uint64_t rss_kb;
    uint64_t hwm_kb;
    uint64_t t_ns;
};

int procSample(pid_t pid, struct proc_sample *s); /* pid 0: this process */
double procCpuPercent(const struct proc_sample *a, const struct proc_sample *b);
bool procIsTenured(pid_t pid);

/* ------------------------------------------------------------------- RPC */

enum {
    CALL_ECONN = -1,    /* local: connection lost / refused */
    CALL_EGIVEUP = -2,  /* local: retried until the call's deadline */
    CALL_ESTOPPED = -3, /* local: the benchmark is shutting down */
    CALL_EPROTO = -4    /* local: undecodable reply */
};

struct rtcp;
struct call;

/* One client connection with its exactly-once identity. Requests are
 * pipelined; replies are matched by id. */
struct rconn
{
    char addr[BENCH_ADDR_MAX];
    int ep;               /* index of addr in the endpoint list, -1 other */
    struct rtcp *tcp;     /* current handle; NULL when idle */
    int state;            /* RC_IDLE, RC_CONNECTING, RC_UP */
    uint64_t gen;         /* bumped on every disconnect/retarget */
    struct tn_frame_reader *rd;
    struct call **slots;  /* in flight, by id & (cap - 1) */
    uint32_t cap;
    uint32_t inflight;
    uint64_t next_id;
    struct call *waitq;   /* calls waiting for the connection */
    struct call *waitq_tail;
    uint64_t client_id;
    uint64_t seq;
    bool forward;         /* set Request.forward */
    uint8_t *out;         /* requests of this loop turn, not written yet */
    size_t out_len;
    size_t out_cap;
    struct rconn *dirty_next; /* in the list of connections to flush */
    bool dirty;
};

typedef void (*call_done_cb)(struct call *k, int status,
                             const Tn__Response *resp);

/* One request with its retry state. The body lives inside the call. */
struct call
{
    struct rconn *conn;
    void *data;
    call_done_cb done;
    Tn__Request req;
    union {
        Tn__SessionOpen so;
        Tn__SessionKeepalive ka;
        Tn__SessionClose sc;
        Tn__Acquire aq;
        Tn__Release rl;
        Tn__ClusterStatus cs;
    } u;
    char res[BENCH_RES_MAX];
    char holder[32];
    bool busy;
    bool inited;
    bool mutation;
    uint64_t id;
    uint64_t gen;       /* conn->gen when sent */
    uint64_t t_first;   /* first send (ns) */
    uint64_t t_sent;    /* this attempt's send (ns) */
    uint64_t deadline;  /* give up after (ns) */
    uint32_t attempts;
    uv_timer_t timer;   /* backoff */
    struct call *next;  /* wait queue */
    bool once;          /* no retries: a failure completes the call */
    int fail_status;    /* once: why it failed */
    uint64_t t_cycle;   /* the workload's own mark (cycle start, ns) */
};

void rconnInit(struct rconn *c, const char *addr, uint32_t cap);
void rconnRetarget(struct rconn *c, const char *addr);

void callInit(struct call *k, struct rconn *c, call_done_cb done, void *data);
void callSessionOpen(struct call *k, const char *holder, uint32_t ttl_ms);
void callKeepalive(struct call *k, uint64_t session);
void callSessionClose(struct call *k, uint64_t session);
void callAcquire(struct call *k,
                 uint64_t session,
                 const char *res,
                 uint32_t wait_ms);
void callRelease(struct call *k, const char *res, uint64_t token);
void callClusterStatus(struct call *k);
/* Sends the prepared call (assigning a new seq to a mutation) and retries
 * redirects and transient failures until @timeout_ms. */
void callStart(struct call *k, uint32_t timeout_ms);

const char *statusName(int status);
int errIndex(int status); /* into bench.errors / bench.retries */

/* ------------------------------------------------------------------ HTTP */

struct htcp;
struct hconn;
typedef void (*hconn_cb)(struct hconn *h, int status); /* HTTP status or <0 */

struct hconn
{
    char addr[BENCH_ADDR_MAX];
    struct htcp *tcp;
    int state;
    http_parser parser;
    bool busy;
    bool complete;
    bool keep_alive;
    hconn_cb cb;
    void *data;
    char out[1024];     /* the request (kept for the connect) */
    size_t out_len;
    /* reply */
    int status;
    uint64_t etag;      /* numeric value of ETag, 0 if none */
    bool have_etag;
    char field[32];
    size_t field_len;
    bool field_long;
    char value[64];
    size_t value_len;
    bool in_value;
    char body[512];
    size_t body_len;
    uint64_t t_sent;
};

void hconnInit(struct hconn *h, const char *addr);
/* One request at a time. @extra: complete header lines or NULL. */
void hconnRequest(struct hconn *h,
                  const char *method,
                  const char *path,
                  const char *extra,
                  const char *body,
                  hconn_cb cb);

/* ----------------------------------------------------------------- bench */

enum workload {
    WL_HTTP_CYCLE,
    WL_RPC_CYCLE,
    WL_CONTEND,
    WL_FAILOVER,
    WL_FILL
};

struct node_proc
{
    unsigned id;
    pid_t pid;
    struct proc_sample a, b;
};

#define ERR_KINDS 64

struct bench
{
    uv_loop_t *loop;
    enum workload wl;
    const char *wl_name;
    char rpc_eps[BENCH_MAX_EPS][BENCH_ADDR_MAX];
    int n_rpc;
    char http_eps[BENCH_MAX_EPS][BENCH_ADDR_MAX];
    int n_http;
    char target_rpc[BENCH_ADDR_MAX];
    char target_http[BENCH_ADDR_MAX];
    uint64_t leader_id;

    /* options */
    int clients;
    int conns;             /* rpc-cycle, contend: connections (0: one each) */
    double duration_s;
    double warmup_s;
    uint64_t max_ops;
    uint32_t ttl_ms;
    uint32_t wait_ms;
    uint32_t hold_ms;
    uint64_t locks;
    uint64_t sessions;
    uint32_t window;
    int repeat;
    const char *cluster_dir;
    const char *cluster_script;
    bool forward;
    bool requeue_early;    /* contend: re-queue with the release */
    bool quiet;
    uint64_t retry_cap_ms; /* longest backoff between retries */
    char run_id[16];

    /* nodes */
    struct node_proc nodes[BENCH_MAX_NODES];
    int n_nodes;
    struct proc_sample self_a, self_b;

    /* run state */
    uint64_t t0;           /* clients started */
    uint64_t t_measure;    /* warm-up over */
    uint64_t t_stop;       /* measuring ended */
    bool measuring;
    int stopping;          /* 0 running, 1 draining, 2 giving up */
    bool aborted;          /* the workload gave up: exit non-zero */
    uint64_t ops_done;     /* every completed op (cap) */
    int clients_done;
    uv_timer_t stop_timer;
    uv_timer_t hard_timer;
    void (*on_stop)(void);

    /* results */
    const char *op_names[4];
    struct hist h[4];
    double op_secs[4];          /* a rate's own time base, 0: the window */
    void (*before_report)(void);
    uint64_t errors[ERR_KINDS]; /* statuses 0..15, local, HTTP classes */
    uint64_t http_status[600];  /* unexpected HTTP answers, by status */
    uint64_t retries[ERR_KINDS];
    uint64_t sessions_lost;
    struct grants grants;
    /* workload-specific lines for the report */
    char extra[4096];
    size_t extra_len;
};

extern struct bench *B;

uint64_t nowNs(void);
void benchExtra(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void benchError(int status);  /* count a final error (RPC status or local) */
void benchHttpError(int status);
/* Records one finished op of kind @op started at @t_start; returns true
 * while the run goes on. */
void benchOp(int op, uint64_t t_start, uint64_t t_end);
void benchStartMeasuring(void);
void benchStopMeasuring(void);
void benchClientDone(void);
void benchSampleProcs(bool end);
int benchFindLeader(uint32_t timeout_ms);
void benchStartClock(void);   /* warm-up, then --duration, then stop */
void benchRefreshNodes(void); /* re-read the pid files */

/* lease arithmetic as the library does it (DESIGN §4.5) */
uint64_t safeUntil(uint64_t t_send, uint32_t ttl_ms);

/* The acquire/release client loop behind rpc-cycle, contend, failover. */
struct cycle_cfg
{
    bool one_resource;   /* every client on the same resource */
    const char *prefix;  /* resource name prefix letter(s) */
    uint32_t wait_ms;    /* acquire: wait in the server's queue */
    uint32_t hold_ms;    /* hold before releasing */
    uint32_t timeout_ms; /* per call, retries included */
    int slot_cycle;      /* histogram slots, -1: not recorded */
    int slot_acq;
    int slot_rel;
    void (*on_acquire)(const struct call *k, uint64_t now);
    bool requeue_early;  /* send the next acquire with the release */
};
void cycleStartClients(const struct cycle_cfg *cfg);

/* workloads */
int wlHttpCycle(void);
int wlRpcCycle(void);
int wlContend(void);
int wlFailover(void);
int wlFill(void);

#endif /* TN_BENCH_H_ */
