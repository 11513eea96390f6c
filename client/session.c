/* Sessions (keepalive, jeopardy tracking) and locks.
 *
 * Keepalive loop of a session, on the I/O thread:
 *   ka_timer fires -> keepalive op (deadline: one interval) ->
 *     OK: renew the lease from the op's first send time; next in a jittered
 *         interval;
 *     SESSION_EXPIRED: the session is lost (on_lost), timers stop;
 *     anything else (timeout, no quorum, unreachable): try again soon.
 * The jeopardy timer fires at the lease's safe deadline; if no renewal moved
 * it meanwhile, the session enters jeopardy (on_jeopardy). A later renewal
 * brings it back (on_safe). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "client.h"

#define KEEPALIVE_RETRY_MS 100
#define KEEPALIVE_MIN_MS   50

/* ------------------------------------------------------------ helpers */

static char *dupString(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

bool sessionUnrefLocked(tn_session *s)
{
    tn_client *c = s->c;
    if (--s->refs > 0) {
        return false;
    }
    free(s->holder);
    free(s);
    return clientUnrefLocked(c);
}

void sessionUnref(tn_session *s)
{
    tn_client *c = s->c;
    bool free_client;
    pthread_mutex_lock(&c->mu);
    free_client = sessionUnrefLocked(s);
    pthread_mutex_unlock(&c->mu);
    if (free_client) {
        clientFree(c);
    }
}

/* ------------------------------------------------------ lease tracking */

static void jeopardyTimerCb(uv_timer_t *t);

/* (loop, mu held) Arm the jeopardy timer at the safe deadline. */
static void armJeopardyLocked(tn_session *s)
{
    uint64_t now;
    uint64_t ms;

    if (!s->registered || s->stopping || s->lease.state != LEASE_SAFE) {
        return;
    }
    now = leaseNow();
    ms = s->lease.safe_until_ns > now
             ? (s->lease.safe_until_ns - now + 999999u) / 1000000u
             : 0;
    uv_update_time(s->c->engine.loop);
    uv_timer_start(&s->jeopardy_timer, jeopardyTimerCb, ms, 0);
}

void sessionRenewedLocked(tn_session *s, uint64_t t_send_ns, uint32_t ttl_ms)
{
    tn_client *c = s->c;
    int ev = leaseRenewed(&s->lease, &c->lease_params, t_send_ns, ttl_ms,
                          leaseNow());
    clientPostEventLocked(c, s, ev, TN_OK);
    armJeopardyLocked(s);
}

void sessionLostLocked(tn_session *s, int rc)
{
    int ev = leaseLost(&s->lease);
    clientPostEventLocked(s->c, s, ev, rc);
}

static void jeopardyTimerCb(uv_timer_t *t)
{
    tn_session *s = t->data;
    tn_client *c = s->c;
    int ev;

    pthread_mutex_lock(&c->mu);
    ev = leaseTick(&s->lease, leaseNow());
    if (ev != LEASE_EVENT_NONE) {
        clientPostEventLocked(c, s, ev, TN_OK);
    } else {
        armJeopardyLocked(s); /* fired early, or renewed meanwhile */
    }
    pthread_mutex_unlock(&c->mu);
}

/* --------------------------------------------------------- keepalive */

static void keepaliveTimerCb(uv_timer_t *t);

static uint32_t keepaliveInterval(tn_session *s)
{
    uint32_t ms = s->opts.keepalive_ms;
    if (ms == 0) {
        ms = s->ttl_ms / 3;
    }
    if (ms < KEEPALIVE_MIN_MS) {
        ms = KEEPALIVE_MIN_MS;
    }
    return ms;
}

/* (loop) Schedule the next keepalive in [0.75, 1] x @ms. */
static void scheduleKeepalive(tn_session *s, uint32_t ms)
{
    uint64_t jittered = ms - engineRandom(&s->c->engine, ms / 4 + 1);
    uv_timer_start(&s->ka_timer, keepaliveTimerCb, jittered, 0);
}

static void sessionLoopRelease(tn_session *s)
{
    if (s->open_timers == 0 && !s->ka_inflight) {
        sessionUnref(s); /* the loop side's reference */
    }
}

static void keepaliveCb(struct engine_op *op, int rc, const Tn__Response *r)
{
    tn_session *s = op->data;
    tn_client *c = s->c;

    s->ka_inflight = false;
    if (s->stopping) {
        sessionLoopRelease(s);
        return;
    }
    pthread_mutex_lock(&c->mu);
    if (rc == TN_OK) {
        uint32_t ttl = s->ttl_ms;
        if (r->body_case == TN__RESPONSE__BODY_SESSION && r->session != NULL) {
            if (r->session->ttl_ms != 0) {
                s->ttl_ms = ttl = r->session->ttl_ms;
            }
            if (r->session->epoch != 0) {
                s->epoch = r->session->epoch;
            }
        }
        sessionRenewedLocked(s, op->first_sent_ns, ttl);
        pthread_mutex_unlock(&c->mu);
        scheduleKeepalive(s, keepaliveInterval(s));
        return;
    }
    if (rc == TN_SESSION_EXPIRED) {
        sessionLostLocked(s, rc);
        pthread_mutex_unlock(&c->mu);
        listRemove(&s->link);
        sessionStop(s);
        return;
    }
    pthread_mutex_unlock(&c->mu);
    if (rc == TN_CANCELED) {
        return; /* the client is closing */
    }
    scheduleKeepalive(s, KEEPALIVE_RETRY_MS);
}

static void keepaliveTimerCb(uv_timer_t *t)
{
    tn_session *s = t->data;
    uint32_t interval;

    if (s->stopping || s->ka_inflight) {
        return;
    }
    interval = keepaliveInterval(s);
    tn__request__init(&s->ka_req);
    tn__session_keepalive__init(&s->ka_body);
    s->ka_body.session = s->id;
    s->ka_req.body_case = TN__REQUEST__BODY_KEEPALIVE;
    s->ka_req.keepalive = &s->ka_body;
    memset(&s->ka_op, 0, sizeof s->ka_op);
    s->ka_op.data = s;
    s->ka_op.request = &s->ka_req;
    /* Keepalives are answered from the leader's memory, without a log
     * entry: they need no exactly-once identity (and must never wait for
     * the sequence window). */
    s->ka_op.mutating = false;
    s->ka_op.cb = keepaliveCb;
    s->ka_op.deadline_ns = leaseNow() + (uint64_t)interval * 1000000u;
    s->ka_inflight = true;
    engineSubmit(&s->c->engine, &s->ka_op);
}

static void timerCloseCb(uv_handle_t *h)
{
    tn_session *s = h->data;
    s->open_timers--;
    sessionLoopRelease(s);
}

void sessionStop(tn_session *s)
{
    if (!s->registered || s->stopping) {
        return;
    }
    s->stopping = true;
    uv_close((uv_handle_t *)&s->ka_timer, timerCloseCb);
    uv_close((uv_handle_t *)&s->jeopardy_timer, timerCloseCb);
}

/* (loop) Start the timers of a freshly opened session. */
static void sessionRegister(tn_session *s)
{
    tn_client *c = s->c;

    uv_timer_init(c->loop, &s->ka_timer);
    uv_timer_init(c->loop, &s->jeopardy_timer);
    s->ka_timer.data = s;
    s->jeopardy_timer.data = s;
    s->open_timers = 2;
    s->registered = true;
    listPush(&c->sessions, &s->link);
    scheduleKeepalive(s, keepaliveInterval(s));
}

/* -------------------------------------------------------------- open */

int sessionOpenReply(struct call *call, int rc, const Tn__Response *r)
{
    tn_session *s = call->ctx;
    tn_client *c = s->c;

    if (rc != TN_OK) {
        return rc;
    }
    if (r->body_case != TN__RESPONSE__BODY_SESSION || r->session == NULL ||
        r->session->session == 0) {
        snprintf(call->op.errmsg, sizeof call->op.errmsg,
                 "session_open reply without a session");
        return TN_PROTOCOL;
    }
    pthread_mutex_lock(&c->mu);
    s->id = r->session->session;
    s->epoch = r->session->epoch;
    if (r->session->ttl_ms != 0) {
        s->ttl_ms = r->session->ttl_ms;
    }
    s->refs++; /* the loop side */
    sessionRegister(s);
    sessionRenewedLocked(s, call->op.first_sent_ns, s->ttl_ms);
    pthread_mutex_unlock(&c->mu);
    return TN_OK;
}

static int defaultHolder(char *buf, size_t len)
{
    char host[128];
    if (gethostname(host, sizeof host) != 0) {
        snprintf(host, sizeof host, "unknown");
    }
    host[sizeof host - 1] = '\0';
    return snprintf(buf, len, "%s:%ld", host, (long)getpid());
}

int sessionPrepare(tn_client *c,
                   const char *holder,
                   uint32_t ttl_ms,
                   const struct tn_session_opts *opts,
                   tn_session **out)
{
    char name[256];
    tn_session *s;

    if (holder == NULL) {
        defaultHolder(name, sizeof name);
        holder = name;
    }
    if (checkText(holder, strlen(holder)) != 0) {
        clientErrmsg(c,
                     "session_open: holder: invalid UTF-8 or control "
                     "character");
        return TN_INVALID_ARGUMENT;
    }
    if (ttl_ms == 0) {
        clientErrmsg(c, "session_open: ttl_ms must be positive");
        return TN_INVALID_ARGUMENT;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL || (s->holder = dupString(holder)) == NULL) {
        free(s);
        clientErrmsg(c, "session_open: out of memory");
        return TN_NOMEM;
    }
    s->c = c;
    s->refs = 1;
    s->ttl_ms = ttl_ms;
    if (opts != NULL) {
        s->opts = *opts;
    }
    s->has_callbacks = s->opts.on_jeopardy != NULL || s->opts.on_safe != NULL ||
                       s->opts.on_lost != NULL;
    leaseInit(&s->lease);
    listInit(&s->link);

    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        free(s->holder);
        free(s);
        return TN_CLOSED;
    }
    c->refs++;
    pthread_mutex_unlock(&c->mu);
    *out = s;
    return TN_OK;
}

void sessionDiscard(tn_session *s)
{
    pthread_mutex_lock(&s->c->mu);
    s->detached = true;
    pthread_mutex_unlock(&s->c->mu);
    sessionUnref(s);
}

void sessionOpenBody(tn_session *s, Tn__SessionOpen *body, struct call *call)
{
    tn__request__init(&call->req);
    body->holder = s->holder;
    body->ttl_ms = s->ttl_ms;
    call->req.body_case = TN__REQUEST__BODY_SESSION_OPEN;
    call->req.session_open = body;
    call->on_reply = sessionOpenReply;
    call->ctx = s;
}

int tn_session_open(tn_client *c,
                    const char *holder,
                    uint32_t ttl_ms,
                    const struct tn_session_opts *opts,
                    tn_session **out)
{
    Tn__SessionOpen body = TN__SESSION_OPEN__INIT;
    struct call call;
    tn_session *s;
    int rc;

    if (c == NULL || out == NULL) {
        return TN_USAGE;
    }
    rc = clientCheckBlocking(c, "session_open");
    if (rc != TN_OK) {
        return rc;
    }
    rc = sessionPrepare(c, holder, ttl_ms, opts, &s);
    if (rc != TN_OK) {
        return rc;
    }
    memset(&call, 0, sizeof call);
    sessionOpenBody(s, &body, &call);
    rc = clientCall(c, &call, true, c->timeout_ms, "session_open");
    if (rc != TN_OK) {
        sessionDiscard(s);
        return rc;
    }
    *out = s;
    return TN_OK;
}

/* ------------------------------------------------------------ close */

/* (mu held) The user's handle goes away: no more callbacks; wait for one
 * that is running on another thread. */
static void detachLocked(tn_session *s)
{
    tn_client *c = s->c;
    s->detached = true;
    while (c->cb_running == s && c->notifier_running &&
           !pthread_equal(pthread_self(), c->notifier)) {
        pthread_cond_wait(&c->cb_done_cond, &c->mu);
    }
}

void sessionMarkClosed(tn_session *s)
{
    pthread_mutex_lock(&s->c->mu);
    s->closed = true;
    detachLocked(s);
    pthread_mutex_unlock(&s->c->mu);
}

void sessionCloseBefore(struct call *call)
{
    tn_session *s = call->ctx;
    listRemove(&s->link);
    sessionStop(s);
}

int tn_session_close(tn_session *s)
{
    Tn__SessionClose body = TN__SESSION_CLOSE__INIT;
    tn_client *c;
    struct call call;
    int rc;

    if (s == NULL) {
        return TN_USAGE;
    }
    c = s->c;
    if (clientCheckBlocking(c, "session_close") != TN_OK) {
        return TN_USAGE;
    }
    sessionMarkClosed(s);

    memset(&call, 0, sizeof call);
    tn__request__init(&call.req);
    body.session = s->id;
    call.req.body_case = TN__REQUEST__BODY_SESSION_CLOSE;
    call.req.session_close = &body;
    call.before = sessionCloseBefore;
    call.ctx = s;
    rc = clientCall(c, &call, true, c->timeout_ms, "session_close");
    sessionUnref(s);
    return rc;
}

static void stopTaskRun(struct task *t, tn_client *c)
{
    tn_session *s = LIST_ENTRY(t, tn_session, stop_task);
    (void)c;
    listRemove(&s->link);
    sessionStop(s);
    sessionUnref(s); /* the task's reference */
}

void tn_session_abandon(tn_session *s)
{
    tn_client *c;

    if (s == NULL) {
        return;
    }
    c = s->c;
    pthread_mutex_lock(&c->mu);
    detachLocked(s);
    s->refs++; /* the stop task */
    pthread_mutex_unlock(&c->mu);
    s->stop_task.run = stopTaskRun;
    if (clientPostTask(c, &s->stop_task) != TN_OK) {
        /* The client is closing: its shutdown stops the timers. */
        sessionUnref(s);
    }
    sessionUnref(s);
}

/* --------------------------------------------------------- accessors */

uint64_t tn_session_id(const tn_session *s)
{
    return s->id;
}

uint64_t tn_session_epoch(const tn_session *s)
{
    uint64_t v;
    pthread_mutex_lock(&s->c->mu);
    v = s->epoch;
    pthread_mutex_unlock(&s->c->mu);
    return v;
}

uint32_t tn_session_ttl_ms(const tn_session *s)
{
    uint32_t v;
    pthread_mutex_lock(&s->c->mu);
    v = s->ttl_ms;
    pthread_mutex_unlock(&s->c->mu);
    return v;
}

const char *tn_session_holder(const tn_session *s)
{
    return s->holder;
}

tn_client *tn_session_client(const tn_session *s)
{
    return s->c;
}

static int64_t sessionValidForLocked(const tn_session *s, uint64_t now)
{
    if (s->closed || s->c->closing) {
        return 0;
    }
    return leaseValidForMs(&s->lease, now);
}

int64_t tn_session_valid_for_ms(const tn_session *s)
{
    int64_t v;
    pthread_mutex_lock(&s->c->mu);
    v = sessionValidForLocked(s, leaseNow());
    pthread_mutex_unlock(&s->c->mu);
    return v;
}

bool tn_session_valid(const tn_session *s)
{
    return tn_session_valid_for_ms(s) > 0;
}

/* ------------------------------------------------------------- locks */

int lockAcquireReply(struct call *call, int rc, const Tn__Response *r)
{
    struct acquire_ctx *ctx = call->ctx;
    tn_session *s = ctx->s;
    tn_client *c = s->c;
    const Tn__LockInfo *li = NULL;

    if (r != NULL && r->body_case == TN__RESPONSE__BODY_LOCK) {
        li = r->lock;
    }
    if (rc == TN_SESSION_EXPIRED) {
        pthread_mutex_lock(&c->mu);
        sessionLostLocked(s, rc);
        pthread_mutex_unlock(&c->mu);
        return rc;
    }
    if (rc == TN_HELD || rc == TN_LOCK_DELAY) {
        readConflict(li, rc, &ctx->local);
        if (ctx->conflict != NULL) {
            *ctx->conflict = ctx->local;
        }
        return rc;
    }
    if (rc != TN_OK) {
        return rc;
    }
    if (li == NULL || li->token == 0) {
        snprintf(call->op.errmsg, sizeof call->op.errmsg,
                 "acquire reply without a token");
        return TN_PROTOCOL;
    }
    ctx->lock->token = li->token;
    ctx->lock->generation = li->generation;
    ctx->lock->mode = (int)li->mode;
    ctx->lock->ttl_ms = li->ttl_ms;
    ctx->lock->grant_deadline_ns =
        leaseDeadline(&c->lease_params, call->op.first_sent_ns,
                      li->ttl_ms != 0 ? li->ttl_ms : s->ttl_ms);
#if CLIENT_ACQUIRE_RENEWS_SESSION
    pthread_mutex_lock(&c->mu);
    sessionRenewedLocked(s, call->op.first_sent_ns, s->ttl_ms);
    pthread_mutex_unlock(&c->mu);
#endif
    return TN_OK;
}

int lockPrepare(tn_session *s,
                const char *resource,
                const struct tn_acquire_opts *opts,
                Tn__Acquire *body,
                struct acquire_ctx *ctx,
                struct call *call,
                tn_lock **out)
{
    static const struct tn_acquire_opts defaults;
    tn_client *c = s->c;
    char msg[128];
    tn_lock *l;

    if (opts == NULL) {
        opts = &defaults;
    }
    if (checkResource(resource, msg, sizeof msg) != 0) {
        clientErrmsg(c, "acquire: %s", msg);
        return TN_INVALID_ARGUMENT;
    }
    if (opts->mode < TN_MODE_EXCLUSIVE || opts->mode > TN_MODE_SEMAPHORE) {
        clientErrmsg(c, "acquire %s: unknown mode %d", resource, opts->mode);
        return TN_INVALID_ARGUMENT;
    }
    if (opts->mode == TN_MODE_SEMAPHORE && opts->permits == 0) {
        clientErrmsg(c, "acquire %s: a semaphore needs permits > 0", resource);
        return TN_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        return TN_CLOSED;
    }
    if (s->lease.state == LEASE_LOST) {
        clientErrmsgLocked(c, "acquire %s: the session is gone", resource);
        pthread_mutex_unlock(&c->mu);
        return TN_SESSION_EXPIRED;
    }
    pthread_mutex_unlock(&c->mu);

    l = calloc(1, sizeof *l);
    if (l == NULL || (l->resource = dupString(resource)) == NULL) {
        free(l);
        clientErrmsg(c, "acquire %s: out of memory", resource);
        return TN_NOMEM;
    }
    l->s = s;

    tn__request__init(&call->req);
    tn__acquire__init(body);
    body->session = s->id;
    body->resource = l->resource;
    body->mode = (Tn__LockMode)opts->mode;
    body->permits = opts->permits;
    body->wait_ms = opts->wait_ms;
    body->lock_delay_ms = opts->lock_delay_ms;
    call->req.body_case = TN__REQUEST__BODY_ACQUIRE;
    call->req.acquire = body;
    call->op.may_wait = opts->wait_ms > 0;
    memset(ctx, 0, sizeof *ctx);
    ctx->s = s;
    ctx->lock = l;
    ctx->conflict = opts->conflict;
    call->on_reply = lockAcquireReply;
    call->ctx = ctx;
    *out = l;
    return TN_OK;
}

void lockAdopt(tn_lock *l)
{
    pthread_mutex_lock(&l->s->c->mu);
    l->s->refs++;
    pthread_mutex_unlock(&l->s->c->mu);
}

void lockDiscard(tn_lock *l)
{
    free(l->resource);
    free(l);
}

/* After a conflict: name the holder in the client's message. */
void conflictErrmsg(tn_client *c,
                    const char *resource,
                    const struct tn_conflict *k)
{
    if (k->status == TN_LOCK_DELAY) {
        clientErrmsg(c,
                     "acquire %.100s: in lock-delay until %llu (cluster "
                     "time, ms)",
                     resource, (unsigned long long)k->lock_delay_until_ms);
    } else if (k->n_holders > 0) {
        clientErrmsg(c,
                     "acquire %.100s: held by %.100s (session %llu, token "
                     "%llu)",
                     resource, k->holder.holder,
                     (unsigned long long)k->holder.session,
                     (unsigned long long)k->holder.token);
    }
}

int tn_lock_acquire(tn_session *s,
                    const char *resource,
                    const struct tn_acquire_opts *opts,
                    tn_lock **out)
{
    Tn__Acquire body;
    struct acquire_ctx ctx;
    struct call call;
    char what[128];
    tn_client *c;
    tn_lock *l;
    uint32_t timeout;
    int rc;

    if (s == NULL || out == NULL) {
        return TN_USAGE;
    }
    c = s->c;
    rc = clientCheckBlocking(c, "acquire");
    if (rc != TN_OK) {
        return rc;
    }
    memset(&call, 0, sizeof call);
    rc = lockPrepare(s, resource, opts, &body, &ctx, &call, &l);
    if (rc != TN_OK) {
        return rc;
    }
    timeout = opts != NULL && opts->timeout_ms != 0
                  ? opts->timeout_ms
                  : c->timeout_ms + (opts != NULL ? opts->wait_ms : 0);
    snprintf(what, sizeof what, "acquire %.100s", resource);
    rc = clientCall(c, &call, true, timeout, what);
    if (rc != TN_OK) {
        if (rc == TN_HELD || rc == TN_LOCK_DELAY) {
            conflictErrmsg(c, resource, &ctx.local);
        }
        lockDiscard(l);
        return rc;
    }
    lockAdopt(l);
    *out = l;
    return TN_OK;
}

static int releaseReply(struct call *call, int rc, const Tn__Response *r)
{
    (void)call;
    (void)r;
    return rc;
}

int tn_release(tn_client *c, const char *resource, uint64_t token)
{
    Tn__Release body = TN__RELEASE__INIT;
    struct call call;
    char msg[128];

    if (c == NULL) {
        return TN_USAGE;
    }
    if (checkResource(resource, msg, sizeof msg) != 0) {
        clientErrmsg(c, "release: %s", msg);
        return TN_INVALID_ARGUMENT;
    }
    if (token == 0) {
        clientErrmsg(c, "release %s: token 0", resource);
        return TN_INVALID_ARGUMENT;
    }
    memset(&call, 0, sizeof call);
    tn__request__init(&call.req);
    body.resource = (char *)resource;
    body.token = token;
    call.req.body_case = TN__REQUEST__BODY_RELEASE;
    call.req.release = &body;
    call.on_reply = releaseReply;
    snprintf(msg, sizeof msg, "release %.100s", resource);
    return clientCall(c, &call, true, c->timeout_ms, msg);
}

int lockReleaseBegin(tn_lock *l)
{
    tn_client *c = l->s->c;

    pthread_mutex_lock(&c->mu);
    if (l->release_done) {
        clientErrmsgLocked(c, "release %s: already released", l->resource);
        pthread_mutex_unlock(&c->mu);
        return TN_USAGE;
    }
    if (l->s->closed || c->closing) {
        pthread_mutex_unlock(&c->mu);
        return TN_CLOSED;
    }
    /* Stop trusting the lock before the release can take effect. */
    l->released = true;
    pthread_mutex_unlock(&c->mu);
    return TN_OK;
}

void lockReleaseEnd(tn_lock *l, int rc)
{
    if (rc == TN_OK || rc == TN_LEASE_EXPIRED || rc == TN_TOKEN_MISMATCH ||
        rc == TN_SESSION_EXPIRED) {
        /* Final answers; after a transient error the caller may retry. */
        pthread_mutex_lock(&l->s->c->mu);
        l->release_done = true;
        pthread_mutex_unlock(&l->s->c->mu);
    }
}

int tn_lock_release(tn_lock *l)
{
    tn_client *c;
    int rc;

    if (l == NULL) {
        return TN_USAGE;
    }
    c = l->s->c;
    if (clientCheckBlocking(c, "release") != TN_OK) {
        return TN_USAGE;
    }
    rc = lockReleaseBegin(l);
    if (rc != TN_OK) {
        return rc;
    }
    rc = tn_release(c, l->resource, l->token);
    lockReleaseEnd(l, rc);
    return rc;
}

struct renew_ctx
{
    tn_session *s; /* NULL for tn_renew() */
    uint32_t granted;
};

static int renewReply(struct call *call, int rc, const Tn__Response *r)
{
    struct renew_ctx *ctx = call->ctx;
    uint32_t ttl = 0;

    if (rc != TN_OK) {
        return rc;
    }
    if (r->body_case == TN__RESPONSE__BODY_LOCK && r->lock != NULL) {
        ttl = r->lock->ttl_ms;
    } else if (r->body_case == TN__RESPONSE__BODY_SESSION &&
               r->session != NULL) {
        ttl = r->session->ttl_ms;
    }
    ctx->granted = ttl;
    if (ctx->s != NULL) {
        tn_client *c = ctx->s->c;
        pthread_mutex_lock(&c->mu);
        if (ttl != 0) {
            ctx->s->ttl_ms = ttl;
        }
        sessionRenewedLocked(ctx->s, call->op.first_sent_ns,
                             ttl != 0 ? ttl : ctx->s->ttl_ms);
        pthread_mutex_unlock(&c->mu);
    }
    return TN_OK;
}

static int renewCommon(tn_client *c,
                       tn_session *s,
                       const char *resource,
                       uint64_t token,
                       uint32_t ttl_ms,
                       uint32_t *granted)
{
    Tn__Renew body = TN__RENEW__INIT;
    struct renew_ctx ctx;
    struct call call;
    char msg[128];
    int rc;

    if (checkResource(resource, msg, sizeof msg) != 0) {
        clientErrmsg(c, "renew: %s", msg);
        return TN_INVALID_ARGUMENT;
    }
    if (token == 0) {
        clientErrmsg(c, "renew %s: token 0", resource);
        return TN_INVALID_ARGUMENT;
    }
    memset(&call, 0, sizeof call);
    tn__request__init(&call.req);
    body.resource = (char *)resource;
    body.token = token;
    body.ttl_ms = ttl_ms;
    call.req.body_case = TN__REQUEST__BODY_RENEW;
    call.req.renew = &body;
    ctx.s = s;
    ctx.granted = 0;
    call.on_reply = renewReply;
    call.ctx = &ctx;
    snprintf(msg, sizeof msg, "renew %.100s", resource);
    rc = clientCall(c, &call, true, c->timeout_ms, msg);
    if (rc == TN_OK && granted != NULL) {
        *granted = ctx.granted;
    }
    return rc;
}

int tn_renew(tn_client *c,
             const char *resource,
             uint64_t token,
             uint32_t ttl_ms,
             uint32_t *granted_ttl_ms)
{
    if (c == NULL) {
        return TN_USAGE;
    }
    return renewCommon(c, NULL, resource, token, ttl_ms, granted_ttl_ms);
}

int tn_lock_renew(tn_lock *l, uint32_t ttl_ms)
{
    tn_client *c;
    int rc;

    if (l == NULL) {
        return TN_USAGE;
    }
    c = l->s->c;
    if (clientCheckBlocking(c, "renew") != TN_OK) {
        return TN_USAGE;
    }
    pthread_mutex_lock(&c->mu);
    if (l->released) {
        clientErrmsgLocked(c, "renew %s: released", l->resource);
        pthread_mutex_unlock(&c->mu);
        return TN_USAGE;
    }
    if (l->s->closed || c->closing) {
        pthread_mutex_unlock(&c->mu);
        return TN_CLOSED;
    }
    pthread_mutex_unlock(&c->mu);
    rc = renewCommon(c, l->s, l->resource, l->token, ttl_ms, NULL);
    if (rc == TN_LEASE_EXPIRED || rc == TN_TOKEN_MISMATCH) {
        pthread_mutex_lock(&c->mu);
        l->released = true; /* no longer ours */
        pthread_mutex_unlock(&c->mu);
    }
    return rc;
}

void tn_lock_free(tn_lock *l)
{
    if (l == NULL) {
        return;
    }
    sessionUnref(l->s);
    free(l->resource);
    free(l);
}

uint64_t tn_lock_token(const tn_lock *l)
{
    return l->token;
}

uint64_t tn_lock_generation(const tn_lock *l)
{
    return l->generation;
}

const char *tn_lock_resource(const tn_lock *l)
{
    return l->resource;
}

tn_session *tn_lock_session(const tn_lock *l)
{
    return l->s;
}

int tn_lock_mode(const tn_lock *l)
{
    return l->mode;
}

int64_t tn_lock_valid_for_ms(const tn_lock *l)
{
    tn_client *c = l->s->c;
    uint64_t now = leaseNow();
    int64_t v;

    pthread_mutex_lock(&c->mu);
    if (l->released) {
        v = 0;
    } else {
        v = sessionValidForLocked(l->s, now);
    }
    pthread_mutex_unlock(&c->mu);
    return v;
}

bool tn_lock_valid(const tn_lock *l)
{
    return tn_lock_valid_for_ms(l) > 0;
}
