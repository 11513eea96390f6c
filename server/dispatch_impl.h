/* Construction of the dispatch (used by node.c; front ends only need
 * dispatch.h). */
#ifndef TN_DISPATCH_IMPL_H_
#define TN_DISPATCH_IMPL_H_

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "dispatch.h"
#include "fsm.h"
#include "raft_adapter.h"

/* A streamed watch that has sent nothing for this long gets a progress
 * event (the current state again), so that its client can tell a quiet
 * stream from a dead or frozen node. Same value as TN_WATCH_PROGRESS_MS in
 * include/tenure.h, which clients use to size their silence limit. */
#define DISPATCH_WATCH_PROGRESS_MS 5000

struct dispatch_config
{
    uint64_t node_id;
    const char *raft_address;
    const char *rpc_address;
    const char *http_address;
    unsigned max_outstanding;   /* raft applies in flight (default 1) */
    unsigned max_batch;         /* commands per entry (default 4096) */
    size_t max_frame;           /* forwarder frame limit */
    unsigned watch_progress_ms; /* stream silence before a progress event
                                 * (0: DISPATCH_WATCH_PROGRESS_MS) */
};

/* Create the dispatch. It installs itself as the FSM's event callback; the
 * node must pass dispatchAdapterHooks() to adapterStart and then call
 * dispatchSetAdapter. */
int dispatchInit(struct dispatch **out,
                 uv_loop_t *loop,
                 struct fsm *fsm,
                 const struct dispatch_config *config);
void dispatchAdapterHooks(struct dispatch *d, struct adapter_hooks *hooks);
void dispatchSetAdapter(struct dispatch *d, struct adapter *a);

/* Stop accepting: pending requests fail with CANCELED (soon); handles are
 * closed; @cb fires once they are. The front ends may still call in until
 * they are closed themselves (dispatchSubmit then answers CANCELED), so
 * the memory stays until dispatchFree. */
void dispatchClose(struct dispatch *d, void (*cb)(void *data), void *data);

/* Frees a dispatch whose close callback has fired, once nothing can call
 * into it any more. */
void dispatchFree(struct dispatch *d);

/* Counters for logs and metrics. */
struct dispatch_stats
{
    uint64_t requests;
    uint64_t batches;
    uint64_t commands;
    uint64_t forwarded;
    uint64_t leader_changes;
    uint64_t keepalives;
    uint64_t expiries_proposed;
    uint64_t parked;            /* queued acquires that waited for a ride */
    unsigned outstanding;
    unsigned sessions_tracked;
};
void dispatchStats(struct dispatch *d, struct dispatch_stats *out);

/* This node's data dir is (no longer) short of space. While it is, writes
 * are refused cluster-wide with NO_SPACE (except release and session
 * close), a leader hands leadership over and a follower reports the alarm
 * to the leader every second. */
void dispatchSetDiskLow(struct dispatch *d, bool low, uint64_t free_bytes);

/* Render this node's lock-service metrics (Prometheus text) through @emit. */
void dispatchMetrics(struct dispatch *d,
                     void (*emit)(void *ctx, const char *text, size_t len),
                     void *ctx);

/* The most contended resources seen by this node as leader, heaviest
 * first; pointers valid until the next request is processed. */
struct metrics_contended;
size_t dispatchContention(struct dispatch *d,
                          const struct metrics_contended **out,
                          size_t max);

#endif /* TN_DISPATCH_IMPL_H_ */
