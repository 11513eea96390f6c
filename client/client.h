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

    uv_loop_t loop;
    uv_async_t async;
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

#endif /* TN_CLIENT_CLIENT_H_ */
