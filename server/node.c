/* A tenure node: wires the loop, raft adapter, FSM, dispatch, RPC and HTTP.
 *
 * Stop sequence: transfer leadership (if leader, bounded wait) → stop the
 * listeners → close raft (pending proposals fail with COMMIT_UNKNOWN) →
 * close the dispatch (delivers every pending reply) → close the front-end
 * connections → free. */
#include "node.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "dispatch_impl.h"
#include "fsm.h"
#include "http.h"
#include "lib/log.h"
#include "metrics.h"
#include "raft_adapter.h"
#include "rpc.h"

struct node
{
    uv_loop_t *loop;
    struct node_config cfg;
    struct fsm fsm;
    struct dispatch *dispatch;
    struct adapter *adapter;
    struct rpc_server *rpc;
    struct http_server http;
    bool http_started;
    uv_timer_t disk_timer;
    bool disk_low;
    uv_timer_t stop_timer;
    unsigned stop_waits;
    bool transferring;
    void (*stop_cb)(void *data);
    void *stop_data;
};

void nodeConfigDefaults(struct node_config *c)
{
    memset(c, 0, sizeof *c);
    c->election_timeout_ms = 300;
    c->heartbeat_ms = 30;
    c->min_ttl_ms = 1000;
    c->max_ttl_ms = 300000;
    c->max_lock_delay_ms = 60000;
    c->max_frame = 1024 * 1024;
    /* 3 segments of 8 MiB, room for a snapshot or two, slack. */
    c->min_free_disk = 64ULL * 1024 * 1024;
}

static int makeDir(const char *dir, char *errmsg, size_t errmsg_len)
{
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            snprintf(errmsg, errmsg_len, "data dir %s is not a directory", dir);
            return -1;
        }
        return 0;
    }
    if (mkdir(dir, 0700) != 0) {
        snprintf(errmsg, errmsg_len, "cannot create data dir %s: %s", dir,
                 strerror(errno));
        return -1;
    }
    return 0;
}

static void httpLog(void *data, int level, const char *line)
{
    (void)data;
    tnLog((enum tn_log_level)level, "\"http\" %s", line);
}

/* The HTTP backend: the dispatch, plus node-level facts. */
static int nodeSubmit(void *data, struct dispatch_req *req)
{
    struct node *n = data;
    return dispatchSubmit(n->dispatch, req);
}

static void nodeCancel(void *data, struct dispatch_req *req)
{
    struct node *n = data;
    dispatchCancel(n->dispatch, req);
}

static void nodeHealth(void *data, struct dispatch_health *out)
{
    struct node *n = data;
    dispatchHealth(n->dispatch, out);
}

static void nodeMetrics(void *data, http_emit_fn emit, void *ctx)
{
    struct node *n = data;
    dispatchMetrics(n->dispatch, emit, ctx);
}

static size_t nodeContention(void *data,
                             struct http_contention *out,
                             size_t max)
{
    struct node *n = data;
    const struct metrics_contended *top[METRICS_TOPK];
    size_t got;
    if (max > METRICS_TOPK) {
        max = METRICS_TOPK;
    }
    got = dispatchContention(n->dispatch, top, max);
    for (size_t i = 0; i < got; i++) {
        struct fsm_lock_view v;
        memset(&out[i], 0, sizeof out[i]);
        out[i].resource = top[i]->resource;
        out[i].conflicts = top[i]->conflicts;
        out[i].acquires = top[i]->acquires;
        if (fsmLockGet(&n->fsm, top[i]->resource, strlen(top[i]->resource),
                       &v)) {
            out[i].waiters = v.queue_len;
        }
        out[i].wait_p50_ms = metricsHistQuantileMs(&top[i]->wait, 0.5);
        out[i].wait_p99_ms = metricsHistQuantileMs(&top[i]->wait, 0.99);
        out[i].hold_p50_ms = metricsHistQuantileMs(&top[i]->hold, 0.5);
        out[i].hold_p99_ms = metricsHistQuantileMs(&top[i]->hold, 0.99);
    }
    return got;
}

/* Disk-space guard: refuse writes before the Raft library ever sees ENOSPC
 * (which 0.22.1 turns into crashes). */
static void diskTimerCb(uv_timer_t *t)
{
    struct node *n = t->data;
    struct statvfs sv;
    uint64_t free_bytes;
    bool low;

    if (statvfs(n->cfg.data_dir, &sv) != 0) {
        return;
    }
    free_bytes = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
    low = free_bytes < n->cfg.min_free_disk;
    if (low != n->disk_low) {
        if (low) {
            tnWarnf("\"disk space low: refusing writes\" free_bytes=%llu "
                    "min_free_disk=%llu data=%s",
                    (unsigned long long)free_bytes,
                    (unsigned long long)n->cfg.min_free_disk,
                    n->cfg.data_dir);
        } else {
            tnInfof("\"disk space recovered\" free_bytes=%llu",
                    (unsigned long long)free_bytes);
        }
        n->disk_low = low;
    }
    dispatchSetDiskLow(n->dispatch, low, free_bytes);
}

int nodeRecover(uv_loop_t *loop,
                const struct node_config *config,
                char *errmsg,
                size_t errmsg_len)
{
    struct adapter_config ac;
    memset(&ac, 0, sizeof ac);
    ac.id = config->id;
    ac.raft_address = config->raft_address;
    ac.dir = config->data_dir;
    ac.n_initial = config->n_initial;
    ac.initial_ids = config->initial_ids;
    ac.initial_addresses = config->initial_addresses;
    return adapterRecover(loop, &ac, errmsg, errmsg_len);
}

int nodeStart(struct node **out,
              uv_loop_t *loop,
              const struct node_config *config,
              char *errmsg,
              size_t errmsg_len)
{
    struct node *n = calloc(1, sizeof *n);
    struct fsm_config fc;
    struct dispatch_config dc;
    struct adapter_config ac;
    struct adapter_hooks hooks;
    struct http_backend backend;
    struct http_config hc;
    int rv;

    if (n == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        return -1;
    }
    n->loop = loop;
    n->cfg = *config;
    if (makeDir(config->data_dir, errmsg, errmsg_len) != 0) {
        free(n);
        return -1;
    }

    fsmConfigDefaults(&fc);
    fc.min_ttl_ms = config->min_ttl_ms;
    fc.max_ttl_ms = config->max_ttl_ms;
    fc.max_lock_delay_ms = config->max_lock_delay_ms;
    if (fsmInit(&n->fsm, &fc) != 0) {
        snprintf(errmsg, errmsg_len, "out of memory");
        free(n);
        return -1;
    }

    memset(&dc, 0, sizeof dc);
    dc.node_id = config->id;
    dc.raft_address = config->raft_address;
    dc.rpc_address = config->rpc_address;
    dc.http_address = config->http_address;
    dc.max_frame = config->max_frame;
    dc.max_outstanding = config->max_inflight;
    dc.watch_progress_ms = config->watch_progress_ms;
    rv = dispatchInit(&n->dispatch, loop, &n->fsm, &dc);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "out of memory");
        return -1;
    }

    memset(&ac, 0, sizeof ac);
    ac.id = config->id;
    ac.raft_address = config->raft_address;
    ac.dir = config->data_dir;
    ac.n_initial = config->n_initial;
    ac.initial_ids = config->initial_ids;
    ac.initial_addresses = config->initial_addresses;
    ac.election_timeout_ms = config->election_timeout_ms;
    ac.heartbeat_ms = config->heartbeat_ms;
    ac.snapshot_threshold = config->snapshot_threshold;
    dispatchAdapterHooks(n->dispatch, &hooks);
    rv = adapterStart(&n->adapter, loop, &n->fsm, &ac, &hooks, errmsg,
                      errmsg_len);
    if (rv != 0) {
        return -1;
    }
    dispatchSetAdapter(n->dispatch, n->adapter);

    rv = rpcServerStart(&n->rpc, loop, n->dispatch, config->rpc_address,
                        config->max_frame, errmsg, errmsg_len);
    if (rv != 0) {
        return -1;
    }

    memset(&backend, 0, sizeof backend);
    backend.data = n;
    backend.submit = nodeSubmit;
    backend.cancel = nodeCancel;
    backend.health = nodeHealth;
    backend.metrics = nodeMetrics;
    backend.contention = nodeContention;
    httpConfigDefaults(&hc);
    hc.log = httpLog;
    rv = httpServerInit(&n->http, loop, &backend, config->http_address, &hc);
    if (rv == 0) {
        n->http_started = true;
        rv = httpServerStart(&n->http);
    }
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "http on %s: %s", config->http_address,
                 httpServerErrmsg(&n->http));
        return -1;
    }
    uv_timer_init(loop, &n->disk_timer);
    n->disk_timer.data = n;
    uv_timer_start(&n->disk_timer, diskTimerCb, 0, 1000);
    tnInfof("\"node started\" raft=%s rpc=%s http=%s data=%s",
            config->raft_address, config->rpc_address, config->http_address,
            config->data_dir);
    *out = n;
    return 0;
}

static void nodeFinish(struct node *n)
{
    void (*cb)(void *) = n->stop_cb;
    void *data = n->stop_data;
    /* Only now: the RPC and HTTP servers, closed after the dispatch, may
     * have submitted to it until they were closed. */
    dispatchFree(n->dispatch);
    n->dispatch = NULL;
    fsmClose(&n->fsm);
    free(n);
    if (cb != NULL) {
        cb(data);
    }
}

static void diskTimerCloseCb(uv_handle_t *h)
{
    nodeFinish(h->data);
}

static void stopTimerCloseCb(uv_handle_t *h)
{
    struct node *n = h->data;
    uv_close((uv_handle_t *)&n->disk_timer, diskTimerCloseCb);
}

static void httpClosedCb(struct http_server *s)
{
    struct node *n = s->data;
    uv_close((uv_handle_t *)&n->stop_timer, stopTimerCloseCb);
}

static void rpcClosedCb(void *data)
{
    struct node *n = data;
    if (n->http_started) {
        n->http.data = n;
        httpServerClose(&n->http, httpClosedCb);
    } else {
        uv_close((uv_handle_t *)&n->stop_timer, stopTimerCloseCb);
    }
}

static void dispatchClosedCb(void *data)
{
    struct node *n = data;
    rpcServerClose(n->rpc, rpcClosedCb, n);
}

static void adapterClosedCb(void *data)
{
    struct node *n = data;
    n->adapter = NULL;
    dispatchSetAdapter(n->dispatch, NULL);
    dispatchClose(n->dispatch, dispatchClosedCb, n);
}

static void stopTimerCb(uv_timer_t *t)
{
    struct node *n = t->data;
    /* Wait (bounded) for the leadership transfer to take effect. */
    if (n->transferring && adapterRole(n->adapter) == ADAPTER_LEADER &&
        n->stop_waits++ < 20) {
        return;
    }
    uv_timer_stop(t);
    uv_timer_stop(&n->disk_timer);
    rpcServerStopListening(n->rpc);
    adapterClose(n->adapter, adapterClosedCb, n);
}

void nodeStop(struct node *n, void (*cb)(void *data), void *data)
{
    n->stop_cb = cb;
    n->stop_data = data;
    uv_timer_init(n->loop, &n->stop_timer);
    n->stop_timer.data = n;
    if (adapterRole(n->adapter) == ADAPTER_LEADER &&
        adapterTransfer(n->adapter, 0) == 0) {
        tnInfof("\"stopping: handing leadership over\"");
        n->transferring = true;
        uv_timer_start(&n->stop_timer, stopTimerCb, 25, 25);
        return;
    }
    uv_timer_start(&n->stop_timer, stopTimerCb, 0, 0);
}
