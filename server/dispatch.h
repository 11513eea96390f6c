/* One dispatch for both front ends (RPC and HTTP).
 *
 * A front end decodes its input into a Tn__Request and submits it; the
 * dispatch validates it, answers reads, batches mutations into Raft entries
 * (through the raft adapter), forwards to the leader when the request asks
 * for it and this node is a follower, and calls back with a Tn__Response.
 *
 * Threading: everything runs on the node's loop thread.
 *
 * Lifecycle of a request:
 *   dispatchSubmit(d, req)  -> 0: req->cb fires exactly once, always later
 *                              (never from inside dispatchSubmit).
 *                           -> non-zero: the cb never fires.
 *   dispatchCancel(d, req)  -> if the request is still pending, its cb fires
 *                              soon with CANCELED (a waiting acquire is
 *                              withdrawn from the queue as far as this node
 *                              can tell; its commit may still happen).
 * The Tn__Response passed to cb belongs to the dispatch and is valid only
 * during the callback: encode or copy what you need.
 *
 * Streamed watches (Request.watch) are the exception to "exactly once": cb
 * fires once per event with Response.more set, then once more with a final
 * Response (more unset). The request must stay valid until that final
 * callback. dispatchCancel ends a stream with a final CANCELED (also when
 * called from inside an event callback). */
#ifndef TN_DISPATCH_H_
#define TN_DISPATCH_H_

#include <stdbool.h>
#include <stdint.h>

#include "lib/queue.h"
#include "tenure.pb-c.h"

struct dispatch;
struct dispatch_req;

typedef void (*dispatch_cb)(struct dispatch_req *req,
                            const Tn__Response *response);

struct dispatch_req
{
    void *data;             /* user data */
    Tn__Request *request;   /* borrowed; must stay valid until cb fires */
    dispatch_cb cb;
    /* private */
    struct dispatch *d;
    tn_queue queue;
    int state;
    uint64_t started_ns;
    uint64_t deadline_ms;   /* watches: when to answer anyway */
    uint64_t client_id;     /* exactly-once identity used for this request */
    uint64_t seq;
    uint64_t wait_session;  /* queued acquire: the session it waits in */
    uint64_t watch_index;   /* streamed watch: index of the last event */
    bool stream;            /* streamed watch accepted (counted) */
    bool cancel;
    void *priv;
};

int dispatchSubmit(struct dispatch *d, struct dispatch_req *req);
void dispatchCancel(struct dispatch *d, struct dispatch_req *req);

/* Cheap, synchronous node facts for /healthz and /readyz. */
struct dispatch_health
{
    uint64_t node_id;
    bool is_leader;
    bool has_leader;        /* this node knows a leader */
    bool ready;             /* leader known and this node caught up */
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
};
void dispatchHealth(struct dispatch *d, struct dispatch_health *out);

#endif /* TN_DISPATCH_H_ */
