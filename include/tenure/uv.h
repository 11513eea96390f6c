/* libtenure on the caller's libuv loop: the same client, sessions and locks
 * as <tenure.h>, driven by non-blocking calls whose callbacks run on that
 * loop. Many calls may be in flight at once on one connection.
 *
 *     static void acquired(struct tn_uv_req *req, int rc, tn_lock *l)
 *     {
 *         if (rc == TN_OK) {
 *             use(tn_lock_token(l));       // fenced writes
 *         }
 *     }
 *     static void opened(struct tn_uv_req *req, int rc, tn_session *s)
 *     {
 *         if (rc == TN_OK) {
 *             tn_uv_lock_acquire(s, &acquire_req, "orders/42", NULL,
 *                                acquired);
 *         }
 *     }
 *     ...
 *     tn_uv_client_open(loop, "10.0.0.1:7101,10.0.0.2:7101", NULL, &c);
 *     tn_uv_session_open(c, &open_req, "worker-7", 10000, NULL, opened);
 *     uv_run(loop, UV_RUN_DEFAULT);
 *
 * Rules (libuv's):
 * - Every tn_uv_* call, and every other tn_* call on handles of such a
 *   client, must be made on the loop's thread.
 * - A call that returns an error never invokes its callback; a call that
 *   returns TN_OK invokes it exactly once, later, from the loop (never from
 *   inside the call).
 * - struct tn_uv_req is the caller's; it must stay valid until its callback
 *   has been called. Set req->data for your own use.
 * - The blocking calls of <tenure.h> that talk to the cluster
 *   (tn_session_open, tn_lock_acquire, tn_lock_release, tn_session_close,
 *   ...) return TN_USAGE on such a client. Accessors, tn_lock_valid*,
 *   tn_lock_free, tn_session_abandon, tn_client_errmsg work as documented
 *   there.
 * - Session callbacks (on_jeopardy, on_safe, on_lost) run on the loop, one
 *   at a time, never from inside a tn_* call.
 * - Keepalives, deadlines and retries run on timers of the loop: keep it
 *   running while sessions are open. */
#ifndef TENURE_UV_H_
#define TENURE_UV_H_

#include <uv.h>

#include "../tenure.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A request in flight. The caller owns it; it must stay valid until its
 * callback runs. */
struct tn_uv_req
{
    void *data;        /* the caller's */
    void *reserved[4]; /* private */
};

typedef void (*tn_uv_done_cb)(struct tn_uv_req *req, int rc);
typedef void (*tn_uv_session_cb)(struct tn_uv_req *req, int rc, tn_session *s);
typedef void (*tn_uv_lock_cb)(struct tn_uv_req *req, int rc, tn_lock *l);

/* Open a client on @loop (see tn_client_open() for @endpoints and @opts).
 * Starts no thread and does not connect yet. Returns TN_OK or
 * TN_INVALID_ARGUMENT / TN_NOMEM / TN_SYSTEM. */
TN_API int tn_uv_client_open(uv_loop_t *loop,
                             const char *endpoints,
                             const struct tn_client_opts *opts,
                             tn_client **out);

/* Close the client: calls in flight complete with TN_CANCELED, open
 * sessions are abandoned (their keepalives stop; the cluster expires
 * them), then @cb(@data) runs (may be NULL) once the client's handles are
 * closed; after it the client must not be used. Session and lock handles
 * that are still open stay valid as memory until closed / freed (their
 * network calls answer TN_CLOSED). */
TN_API void tn_uv_client_close(tn_client *c,
                               void (*cb)(void *data),
                               void *data);

/* Open a session (see tn_session_open()). @cb gets the session on TN_OK. */
TN_API int tn_uv_session_open(tn_client *c,
                              struct tn_uv_req *req,
                              const char *holder,
                              uint32_t ttl_ms,
                              const struct tn_session_opts *opts,
                              tn_uv_session_cb cb);

/* Close the session on the cluster (see tn_session_close()). The handle is
 * detached at once (no more session callbacks) and freed before @cb runs. */
TN_API int tn_uv_session_close(tn_session *s,
                               struct tn_uv_req *req,
                               tn_uv_done_cb cb);

/* Acquire a lock (see tn_lock_acquire()); opts->conflict, if set, must
 * stay valid until @cb runs. @cb gets the lock on TN_OK. */
TN_API int tn_uv_lock_acquire(tn_session *s,
                              struct tn_uv_req *req,
                              const char *resource,
                              const struct tn_acquire_opts *opts,
                              tn_uv_lock_cb cb);

/* Release the lock on the cluster (see tn_lock_release()); the handle
 * stays allocated: free it with tn_lock_free() (in @cb or later). */
TN_API int tn_uv_lock_release(tn_lock *l,
                              struct tn_uv_req *req,
                              tn_uv_done_cb cb);

/* The state of @resource (see tn_lock_status()); *@out is filled before
 * @cb runs with TN_OK (free it with tn_lock_info_clear()). */
TN_API int tn_uv_lock_status(tn_client *c,
                             struct tn_uv_req *req,
                             const char *resource,
                             const struct tn_read_opts *opts,
                             struct tn_lock_info *out,
                             tn_uv_done_cb cb);

/* The cluster as one node sees it (see tn_cluster_status()). */
TN_API int tn_uv_cluster_status(tn_client *c,
                                struct tn_uv_req *req,
                                struct tn_cluster_info *out,
                                tn_uv_done_cb cb);

/* A streamed watch on the loop (see tn_watch_open() for @resource, @flags
 * and @after_index). @cb(@w, TN_OK, ev, data) runs for each event (@ev and
 * what it points to are valid during the call only); if the watch ends on
 * its own (TN_INVALID_ARGUMENT, TN_REFUSED, TN_CANCELED when the client
 * closes, ...) @cb(@w, rc, NULL, data) runs once, last. Either way the
 * handle stays valid until tn_uv_watch_close(), after which @cb never runs.
 * Returns TN_OK (@cb runs later, never from inside this call) or an error
 * (@cb never runs, *@out is not set). */
typedef void (*tn_uv_watch_cb)(tn_watch *w,
                               int rc,
                               const struct tn_watch_event *ev,
                               void *data);
TN_API int tn_uv_watch_open(tn_client *c,
                            const char *resource,
                            int flags,
                            uint64_t after_index,
                            tn_uv_watch_cb cb,
                            void *data,
                            tn_watch **out);

/* Stop the watch and free the handle (on the loop's thread; also from
 * inside its callback). NULL is ignored. */
TN_API void tn_uv_watch_close(tn_watch *w);

#ifdef __cplusplus
}
#endif

#endif /* TENURE_UV_H_ */
