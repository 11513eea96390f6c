/* Internals of the blocking API: the client object, its I/O thread, calls
 * that block a user thread until the engine completes them, sessions, locks
 * and the callback (notifier) thread.
 *
 * Threads of one tn_client:
 *   - user threads call the public functions; a call is queued as a task
 *     (under mu) and the I/O thread is woken with uv_async_send(), then the
 *     user thread waits on the call's condition variable;
 *   - the I/O thread runs the private libuv loop: the engine, keepalive and
 *     jeopardy timers, and the on_reply hooks of calls;
 *   - the notifier thread (started with the first session that has
 *     callbacks) runs the user's session callbacks, one at a time.
 *
 * Locking: one mutex per client (mu) guards the task queue, reference
 * counts, lease states and flags read by user threads, the notifier queue
 * and errmsg. Loop-only fields are marked (loop). */
#ifndef TN_CLIENT_CLIENT_H_
#define TN_CLIENT_CLIENT_H_

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "engine.h"
#include "lease.h"
#include "list.h"
#include "tenure.h"
#include "tenure.pb-c.h"

/* Whether a successful acquire also renews the session on the cluster
 * (then its send time starts a new session lease, DESIGN §4 rule 5). */
#define CLIENT_ACQUIRE_RENEWS_SESSION 0

#define CLIENT_TIMEOUT_MS_DEFAULT         5000
#define CLIENT_CONNECT_TIMEOUT_MS_DEFAULT 1000
#define CLIENT_MAX_FRAME_DEFAULT          (64u * 1024 * 1024)

/* Work for the I/O thread. */
struct task
{
    struct list link;
    void (*run)(struct task *t, tn_client *c); /* on the loop thread */
};

struct call;
/* Runs on the loop thread when the op completes, before the caller wakes;
 * returns the code the caller gets (usually @rc). @r may be NULL. */
typedef int (*call_reply_fn)(struct call *call, int rc, const Tn__Response *r);

/* A blocking request: lives on the caller's stack. */
struct call
{
    struct task task;
    struct engine_op op;
    Tn__Request req;
    tn_client *c;
    call_reply_fn on_reply;            /* may be NULL */
    void (*before)(struct call *call); /* loop thread, before submitting */
    /* Asynchronous calls (clientStart): runs on the loop thread with the
     * final code instead of waking a waiting thread. */
    void (*finish)(struct call *call, int rc);
    const char *what; /* for the error message */
    void *ctx;
    pthread_cond_t cond;
    bool done; /* mu */
    int rc;    /* mu */
};

struct event
{
    struct list link;
    tn_session *s; /* holds a reference */
    int kind;      /* enum lease_event */
    int rc;
};

struct tn_client
{
    pthread_mutex_t mu;
    int refs;      /* mu: user, sessions, notifier thread */
    bool closing;  /* mu: tn_client_close() started */
    bool shutdown; /* mu: the loop must shut down */
    struct lease_params lease_params;
    uint32_t timeout_ms;
    uint64_t client_id;
    char errmsg[TN_ERRMSG_BUF_SIZE]; /* mu */

    uv_loop_t *loop; /* own_loop, or the caller's (external) */
    uv_loop_t own_loop;
    bool external;                /* on the caller's loop (tenure/uv.h) */
    uv_async_t async;             /* !external: wakes the I/O thread */
    uv_timer_t event_timer;       /* external: delivers callbacks */
    void (*close_cb)(void *data); /* external: tn_uv_client_close() */
    void *close_data;
    pthread_t thread;
    struct engine engine; /* (loop) */
    struct list tasks;    /* mu */
    struct list sessions; /* (loop) sessions with running timers */

    /* Notifier. */
    bool notifier_running; /* mu */
    bool notifier_stop;    /* mu */
    pthread_t notifier;
    pthread_cond_t notify_cond;  /* events or stop */
    pthread_cond_t cb_done_cond; /* a callback returned */
    struct list events;          /* mu */
    tn_session *cb_running;      /* mu: session whose callback runs */
};

struct tn_session
{
    tn_client *c;
    int refs; /* mu: user, locks, loop side, queued events */
    uint64_t id;
    uint64_t epoch;  /* mu */
    uint32_t ttl_ms; /* mu */
    char *holder;    /* owned */
    struct tn_session_opts opts;
    bool has_callbacks;
    struct lease lease; /* mu */
    bool closed;        /* mu: tn_session_close() called */
    bool detached;      /* mu: the user's handle is gone (close/abandon) */

    /* Loop side. */
    bool registered;  /* (loop) timers initialised, in c->sessions */
    bool stopping;    /* (loop) timers closing */
    int open_timers;  /* (loop) */
    bool ka_inflight; /* (loop) */
    uint32_t keepalive_ms;
    uv_timer_t ka_timer;
    uv_timer_t jeopardy_timer;
    struct engine_op ka_op;
    Tn__Request ka_req;
    Tn__SessionKeepalive ka_body;
    struct task stop_task; /* tn_session_abandon() */
    struct list link;      /* (loop) c->sessions */
};

struct tn_lock
{
    tn_session *s;  /* holds a reference */
    char *resource; /* owned */
    uint64_t token;
    uint64_t generation;
    int mode;
    uint32_t ttl_ms;
    uint64_t grant_deadline_ns; /* from the acquire's send time */
    bool released;              /* mu: no longer to be trusted */
    bool release_done;          /* mu: a release got a final answer */
};

/* ---- client.c */

/* Run @call (request body already set in call->req) with a deadline of
 * @timeout_ms from now. Returns the final code. Records a message in
 * c->errmsg on failure, prefixed with @what. */
int clientCall(tn_client *c,
               struct call *call,
               bool mutating,
               uint32_t timeout_ms,
               const char *what);

/* Start @call without waiting (external clients, on the loop thread):
 * call->finish fires later with the final code, never from inside this
 * function. Returns TN_OK, or TN_CLOSED (then finish never fires). */
int clientStart(tn_client *c,
                struct call *call,
                bool mutating,
                uint32_t timeout_ms,
                const char *what);

/* Create a client; on the caller's @loop (external) or, if @loop is NULL,
 * on an own loop and I/O thread. */
int clientCreate(const char *endpoints,
                 const struct tn_client_opts *opts,
                 uv_loop_t *loop,
                 tn_client **out,
                 char *errmsg);

/* Blocking calls are not available on an external client: returns
 * TN_USAGE (with a message) if @c is one, else TN_OK. */
int clientCheckBlocking(tn_client *c, const char *what);

/* Start closing an external client: cancels its calls, abandons its
 * sessions; @cb(@data) fires when everything is closed. */
void clientCloseExternal(tn_client *c, void (*cb)(void *data), void *data);

/* Queue @t for the loop thread. Returns TN_OK or TN_CLOSED. */
int clientPostTask(tn_client *c, struct task *t);

/* Set c->errmsg (mu held). */
void clientErrmsgLocked(tn_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void clientErrmsg(tn_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Drop a reference (mu held). Returns true if the client must now be freed
 * with clientFree() (after unlocking). */
bool clientUnrefLocked(tn_client *c);
void clientFree(tn_client *c);

/* Queue a callback event for @s (mu held; loop thread). */
void clientPostEventLocked(tn_client *c, tn_session *s, int kind, int rc);

/* ---- session.c */

struct acquire_ctx
{
    tn_session *s;
    tn_lock *lock;
    struct tn_conflict *conflict; /* the caller's, or NULL */
    struct tn_conflict local;     /* always filled on a conflict */
};

/* Name the holder of a conflict in the client's message. */
void conflictErrmsg(tn_client *c,
                    const char *resource,
                    const struct tn_conflict *k);

/* Validate and allocate a session (holds a client reference), not yet
 * open on the cluster. */
int sessionPrepare(tn_client *c,
                   const char *holder,
                   uint32_t ttl_ms,
                   const struct tn_session_opts *opts,
                   tn_session **out);
/* Its open failed: drop it. */
void sessionDiscard(tn_session *s);
/* Fill @call to open @s (@body must live as long as the call). */
void sessionOpenBody(tn_session *s, Tn__SessionOpen *body, struct call *call);
int sessionOpenReply(struct call *call, int rc, const Tn__Response *r);
/* The user closes @s: no more callbacks (waits for a running one on
 * another thread). */
void sessionMarkClosed(tn_session *s);
/* call->before of a session close (ctx = the session): stop the timers. */
void sessionCloseBefore(struct call *call);
/* Drop a reference (takes mu). */
void sessionUnref(tn_session *s);

/* Validate an acquire and allocate its lock (not yet referenced by the
 * session); fill @call (ctx = @ctx, @body must live as long as the call).
 * lockAdopt() on success, lockDiscard() otherwise. */
int lockPrepare(tn_session *s,
                const char *resource,
                const struct tn_acquire_opts *opts,
                Tn__Acquire *body,
                struct acquire_ctx *ctx,
                struct call *call,
                tn_lock **out);
int lockAcquireReply(struct call *call, int rc, const Tn__Response *r);
void lockAdopt(tn_lock *l);
void lockDiscard(tn_lock *l);
/* Before a release: TN_OK, or why not (the lock is then untouched). */
int lockReleaseBegin(tn_lock *l);
/* After it, with its result. */
void lockReleaseEnd(tn_lock *l, int rc);

/* Stop the loop side of @s (timers, keepalives). Loop thread. */
void sessionStop(tn_session *s);

/* Drop a reference (mu held). Returns true if the client must be freed. */
bool sessionUnrefLocked(tn_session *s);

/* The cluster said @s is gone (loop thread, mu held). */
void sessionLostLocked(tn_session *s, int rc);

/* A request first sent at @t_send_ns renewed @s for @ttl_ms (loop thread,
 * mu held). */
void sessionRenewedLocked(tn_session *s, uint64_t t_send_ns, uint32_t ttl_ms);

/* ---- read.c */

/* Copy a LockInfo into a tn_lock_info. Returns TN_OK or TN_NOMEM. */
int readLockInfo(const Tn__LockInfo *in, struct tn_lock_info *out);

/* Copy holders[0] of a LockInfo into a conflict. */
void readConflict(const Tn__LockInfo *in, int status, struct tn_conflict *out);

/* Copy a Holder. */
void readHolder(const Tn__Holder *in, struct tn_holder_info *out);

struct status_ctx
{
    const char *resource;
    struct tn_lock_info *out;
};
/* on_reply of get_lock (ctx: struct status_ctx). */
int readStatusReply(struct call *call, int rc, const Tn__Response *r);
/* on_reply of cluster_status (ctx: the struct tn_cluster_info). */
int readClusterReply(struct call *call, int rc, const Tn__Response *r);

#endif /* TN_CLIENT_CLIENT_H_ */
