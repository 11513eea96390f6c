/* The client object: its loop (own I/O thread, or the caller's loop),
 * blocking and asynchronous calls, callback delivery. */
#include "client.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "frame.h"

/* ------------------------------------------------------------ errmsg */

void clientErrmsgLocked(tn_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
}

void clientErrmsg(tn_client *c, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&c->mu);
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&c->mu);
}

const char *tn_client_errmsg(tn_client *c)
{
    if (c == NULL) {
        return "";
    }
    return c->errmsg;
}

void tn_client_errmsg_copy(tn_client *c, char *buf, size_t len)
{
    if (buf == NULL || len == 0) {
        return;
    }
    if (c == NULL) {
        buf[0] = '\0';
        return;
    }
    pthread_mutex_lock(&c->mu);
    snprintf(buf, len, "%s", c->errmsg);
    pthread_mutex_unlock(&c->mu);
}

uint64_t tn_client_id(tn_client *c)
{
    return c->client_id;
}

/* ------------------------------------------------------- references */

bool clientUnrefLocked(tn_client *c)
{
    return --c->refs == 0;
}

void clientFree(tn_client *c)
{
    pthread_cond_destroy(&c->notify_cond);
    pthread_cond_destroy(&c->cb_done_cond);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* --------------------------------------------------------- the loop */

static void eventTimerClosedCb(uv_handle_t *h);

static void engineClosedCb(struct engine *e)
{
    tn_client *c = e->data;
    if (c->external) {
        uv_close((uv_handle_t *)&c->event_timer, eventTimerClosedCb);
    } else {
        uv_close((uv_handle_t *)&c->async, NULL);
    }
}

static void loopShutdown(tn_client *c)
{
    struct list *l;

    /* Abandon the sessions still open: stop their keepalives. */
    while ((l = listShift(&c->sessions)) != NULL) {
        tn_session *s = LIST_ENTRY(l, tn_session, link);
        listInit(&s->link);
        sessionStop(s);
    }
    engineClose(&c->engine, engineClosedCb);
}

static void asyncCb(uv_async_t *a)
{
    tn_client *c = a->data;
    struct list tasks;
    struct list *l;
    bool shutdown;

    listInit(&tasks);
    pthread_mutex_lock(&c->mu);
    listSplice(&tasks, &c->tasks);
    shutdown = c->shutdown;
    c->shutdown = false;
    pthread_mutex_unlock(&c->mu);

    while ((l = listShift(&tasks)) != NULL) {
        struct task *t = LIST_ENTRY(l, struct task, link);
        t->run(t, c);
    }
    if (shutdown) {
        loopShutdown(c);
    }
}

static void *loopMain(void *arg)
{
    tn_client *c = arg;
    uv_run(c->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* -------------------------------------------------------------- calls */

int clientPostTask(tn_client *c, struct task *t)
{
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        return TN_CLOSED;
    }
    if (c->external) {
        /* We are on the loop's thread already. */
        pthread_mutex_unlock(&c->mu);
        t->run(t, c);
        return TN_OK;
    }
    listPush(&c->tasks, &t->link);
    /* Under mu: the loop closes the async handle only after closing is set
     * (under mu), so the handle is open here. */
    uv_async_send(&c->async);
    pthread_mutex_unlock(&c->mu);
    return TN_OK;
}

static void callOpCb(struct engine_op *op, int rc, const Tn__Response *r)
{
    struct call *call = op->data;
    tn_client *c = call->c;

    if (call->on_reply != NULL) {
        rc = call->on_reply(call, rc, r);
    }
    if (call->finish != NULL) {
        if (rc != TN_OK) {
            clientErrmsg(
                c, "%s: %s", call->what,
                call->op.errmsg[0] ? call->op.errmsg : tn_strerror(rc));
        }
        call->finish(call, rc); /* may free @call */
        return;
    }
    pthread_mutex_lock(&c->mu);
    call->rc = rc;
    call->done = true;
    pthread_cond_signal(&call->cond);
    pthread_mutex_unlock(&c->mu);
}

static void callRun(struct task *t, tn_client *c)
{
    struct call *call = LIST_ENTRY(t, struct call, task);
    (void)c;
    if (call->before != NULL) {
        call->before(call);
    }
    engineSubmit(&c->engine, &call->op);
}

int clientCheckBlocking(tn_client *c, const char *what)
{
    if (c->external) {
        clientErrmsg(c,
                     "%s: a client on a libuv loop has only the tn_uv_* "
                     "calls",
                     what);
        return TN_USAGE;
    }
    return TN_OK;
}

int clientStart(tn_client *c,
                struct call *call,
                bool mutating,
                uint32_t timeout_ms,
                const char *what)
{
    int rc;

    call->c = c;
    call->what = what;
    call->task.run = callRun;
    call->op.data = call;
    call->op.request = &call->req;
    call->op.mutating = mutating;
    call->op.cb = callOpCb;
    call->op.deadline_ns = leaseNow() + (uint64_t)timeout_ms * 1000000u;
    call->op.errmsg[0] = '\0';
    rc = clientPostTask(c, &call->task);
    if (rc != TN_OK) {
        clientErrmsg(c, "%s: client is closed", what);
    }
    return rc;
}

int clientCall(tn_client *c,
               struct call *call,
               bool mutating,
               uint32_t timeout_ms,
               const char *what)
{
    bool free_client;
    int rc;

    rc = clientCheckBlocking(c, what);
    if (rc != TN_OK) {
        return rc;
    }
    call->c = c;
    call->finish = NULL;
    call->task.run = callRun;
    call->op.data = call;
    call->op.request = &call->req;
    call->op.mutating = mutating;
    call->op.cb = callOpCb;
    call->op.deadline_ns = leaseNow() + (uint64_t)timeout_ms * 1000000u;
    call->op.errmsg[0] = '\0';
    call->done = false;
    call->rc = TN_INTERNAL;
    if (pthread_cond_init(&call->cond, NULL) != 0) {
        clientErrmsg(c, "%s: pthread_cond_init failed", what);
        return TN_SYSTEM;
    }
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        clientErrmsgLocked(c, "%s: client is closed", what);
        pthread_mutex_unlock(&c->mu);
        pthread_cond_destroy(&call->cond);
        return TN_CLOSED;
    }
    /* The call keeps the client alive: tn_client_close() may run while it
     * waits, and the wake-up below still needs c->mu. */
    c->refs++;
    listPush(&c->tasks, &call->task.link);
    uv_async_send(&c->async);
    pthread_mutex_unlock(&c->mu);

    pthread_mutex_lock(&c->mu);
    while (!call->done) {
        pthread_cond_wait(&call->cond, &c->mu);
    }
    rc = call->rc;
    if (rc != TN_OK) {
        clientErrmsgLocked(
            c, "%s: %s", what,
            call->op.errmsg[0] ? call->op.errmsg : tn_strerror(rc));
    }
    free_client = clientUnrefLocked(c);
    pthread_mutex_unlock(&c->mu);
    pthread_cond_destroy(&call->cond);
    if (free_client) {
        clientFree(c);
    }
    return rc;
}

/* ------------------------------------------------------------ notifier */

static void deliver(tn_session *s, int kind, int rc)
{
    switch (kind) {
    case LEASE_EVENT_JEOPARDY:
        if (s->opts.on_jeopardy != NULL) {
            s->opts.on_jeopardy(s, s->opts.data);
        }
        break;
    case LEASE_EVENT_SAFE:
        if (s->opts.on_safe != NULL) {
            s->opts.on_safe(s, s->opts.data);
        }
        break;
    case LEASE_EVENT_LOST:
        if (s->opts.on_lost != NULL) {
            s->opts.on_lost(s, rc, s->opts.data);
        }
        break;
    default:
        break;
    }
}

static void *notifierMain(void *arg)
{
    tn_client *c = arg;
    bool free_client;

    pthread_mutex_lock(&c->mu);
    for (;;) {
        struct list *l;
        struct event *ev;
        tn_session *s;

        while (listEmpty(&c->events) && !c->notifier_stop) {
            pthread_cond_wait(&c->notify_cond, &c->mu);
        }
        l = listShift(&c->events);
        if (l == NULL) {
            break; /* stop requested and nothing queued */
        }
        ev = LIST_ENTRY(l, struct event, link);
        s = ev->s;
        if (!c->notifier_stop && !s->detached) {
            c->cb_running = s;
            pthread_mutex_unlock(&c->mu);
            deliver(s, ev->kind, ev->rc);
            pthread_mutex_lock(&c->mu);
            c->cb_running = NULL;
            pthread_cond_broadcast(&c->cb_done_cond);
        }
        free(ev);
        if (sessionUnrefLocked(s)) {
            /* Cannot happen: the notifier holds a client reference. */
        }
    }
    free_client = clientUnrefLocked(c);
    pthread_mutex_unlock(&c->mu);
    if (free_client) {
        clientFree(c);
    }
    return NULL;
}

/* External clients: deliver the queued callbacks on the loop. */
static void eventTimerCb(uv_timer_t *t)
{
    tn_client *c = t->data;
    struct list *l;

    pthread_mutex_lock(&c->mu);
    while ((l = listShift(&c->events)) != NULL) {
        struct event *ev = LIST_ENTRY(l, struct event, link);
        tn_session *s = ev->s;
        if (!c->notifier_stop && !s->detached) {
            c->cb_running = s;
            pthread_mutex_unlock(&c->mu);
            deliver(s, ev->kind, ev->rc);
            pthread_mutex_lock(&c->mu);
            c->cb_running = NULL;
        }
        free(ev);
        if (sessionUnrefLocked(s)) {
            /* Cannot happen: the user's reference is held until the
             * event timer is closed. */
        }
    }
    pthread_mutex_unlock(&c->mu);
}

void clientPostEventLocked(tn_client *c, tn_session *s, int kind, int rc)
{
    struct event *ev;

    if (kind == LEASE_EVENT_NONE || !s->has_callbacks || s->detached ||
        c->notifier_stop) {
        return;
    }
    if (c->external) {
        ev = malloc(sizeof *ev);
        if (ev == NULL) {
            return;
        }
        ev->s = s;
        ev->kind = kind;
        ev->rc = rc;
        s->refs++;
        listPush(&c->events, &ev->link);
        uv_timer_start(&c->event_timer, eventTimerCb, 0, 0);
        return;
    }
    if (!c->notifier_running) {
        sigset_t all;
        sigset_t old;
        int rv;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rv = pthread_create(&c->notifier, NULL, notifierMain, c);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rv != 0) {
            return; /* callbacks are lost; tn_lock_valid() still works */
        }
        c->notifier_running = true;
        c->refs++;
    }
    ev = malloc(sizeof *ev);
    if (ev == NULL) {
        return;
    }
    ev->s = s;
    ev->kind = kind;
    ev->rc = rc;
    s->refs++;
    listPush(&c->events, &ev->link);
    pthread_cond_signal(&c->notify_cond);
}

/* -------------------------------------------------------- open / close */

static uint64_t randomClientId(void)
{
    uint64_t id = 0;
    while (id == 0) {
        if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id) {
            id = leaseNow() ^ ((uint64_t)getpid() << 32) ^
                 (uint64_t)(uintptr_t)&id;
            id *= 0x9E3779B97F4A7C15ULL;
        }
    }
    return id;
}

static uint32_t optOr(uint32_t v, uint32_t def)
{
    if (v == TN_OPT_ZERO) {
        return 0;
    }
    return v != 0 ? v : def;
}

int clientCreate(const char *endpoints,
                 const struct tn_client_opts *opts,
                 uv_loop_t *loop,
                 tn_client **out,
                 char *errmsg)
{
    struct tn_client_opts o;
    struct engine_config ec;
    struct endpoint *eps = NULL;
    size_t n = 0;
    char msg[TN_ERRMSG_BUF_SIZE];
    tn_client *c;
    sigset_t all;
    sigset_t old;
    int rv;

    msg[0] = '\0';
    if (out == NULL) {
        snprintf(msg, sizeof msg, "out is NULL");
        rv = TN_USAGE;
        goto err;
    }
    memset(&o, 0, sizeof o);
    if (opts != NULL) {
        o = *opts;
    }
    rv = endpointParseList(endpoints, &eps, &n, msg, sizeof msg);
    if (rv != 0) {
        rv = rv == -2 ? TN_NOMEM : TN_INVALID_ARGUMENT;
        goto err;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(msg, sizeof msg, "out of memory");
        rv = TN_NOMEM;
        goto err_after_parse;
    }
    c->refs = 1;
    c->timeout_ms = optOr(o.timeout_ms, CLIENT_TIMEOUT_MS_DEFAULT);
    c->lease_params.drift_ppm = optOr(o.drift_ppm, LEASE_DRIFT_PPM_DEFAULT);
    c->lease_params.margin_ms = optOr(o.margin_ms, LEASE_MARGIN_MS_DEFAULT);
    if (c->lease_params.drift_ppm >= 1000000u) {
        snprintf(msg, sizeof msg, "drift_ppm must be below 1000000");
        rv = TN_INVALID_ARGUMENT;
        goto err_after_alloc;
    }
    c->client_id = randomClientId();
    ec.connect_timeout_ms =
        optOr(o.connect_timeout_ms, CLIENT_CONNECT_TIMEOUT_MS_DEFAULT);
    ec.max_frame = optOr(o.max_frame, CLIENT_MAX_FRAME_DEFAULT);
    ec.watch_progress_ms = optOr(o.watch_progress_ms, TN_WATCH_PROGRESS_MS);
    if (ec.max_frame < 1024) {
        ec.max_frame = 1024;
    }
    listInit(&c->tasks);
    listInit(&c->sessions);
    listInit(&c->events);
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        snprintf(msg, sizeof msg, "pthread_mutex_init failed");
        rv = TN_SYSTEM;
        goto err_after_alloc;
    }
    if (pthread_cond_init(&c->notify_cond, NULL) != 0) {
        snprintf(msg, sizeof msg, "pthread_cond_init failed");
        rv = TN_SYSTEM;
        goto err_after_mutex;
    }
    if (pthread_cond_init(&c->cb_done_cond, NULL) != 0) {
        snprintf(msg, sizeof msg, "pthread_cond_init failed");
        rv = TN_SYSTEM;
        goto err_after_cond1;
    }
    if (loop != NULL) {
        /* On the caller's loop: no thread; callbacks from a timer. */
        c->external = true;
        c->loop = loop;
        uv_timer_init(loop, &c->event_timer);
        c->event_timer.data = c;
        rv = engineInit(&c->engine, loop, &ec, eps, n, c->client_id);
        if (rv != TN_OK) {
            /* Cannot happen (n > 0, id != 0); the timer needs the loop to
             * close, so leak nothing but the handle's memory: keep c. */
            snprintf(msg, sizeof msg, "engine: %s", tn_strerror(rv));
            goto err_after_cond2;
        }
        c->engine.data = c;
        *out = c;
        return TN_OK;
    }
    c->loop = &c->own_loop;
    rv = uv_loop_init(c->loop);
    if (rv != 0) {
        snprintf(msg, sizeof msg, "uv_loop_init(): %s", uv_strerror(rv));
        rv = TN_SYSTEM;
        goto err_after_cond2;
    }
    rv = uv_async_init(c->loop, &c->async, asyncCb);
    if (rv != 0) {
        snprintf(msg, sizeof msg, "uv_async_init(): %s", uv_strerror(rv));
        rv = TN_SYSTEM;
        goto err_after_loop;
    }
    c->async.data = c;
    rv = engineInit(&c->engine, c->loop, &ec, eps, n, c->client_id);
    if (rv != TN_OK) {
        snprintf(msg, sizeof msg, "engine: %s", tn_strerror(rv));
        goto err_after_async;
    }
    c->engine.data = c;
    /* The I/O thread takes no signals: they go to the application's
     * threads, and a write to a closed socket gives EPIPE, not SIGPIPE. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rv = pthread_create(&c->thread, NULL, loopMain, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rv != 0) {
        snprintf(msg, sizeof msg, "pthread_create(): %s", strerror(rv));
        rv = TN_SYSTEM;
        goto err_after_engine;
    }
    *out = c;
    return TN_OK;

err_after_engine:
    /* The engine's handles are closed by running the loop here. */
    engineClose(&c->engine, engineClosedCb);
    uv_run(c->loop, UV_RUN_DEFAULT);
    uv_loop_close(c->loop);
    pthread_cond_destroy(&c->cb_done_cond);
    pthread_cond_destroy(&c->notify_cond);
    pthread_mutex_destroy(&c->mu);
    free(c);
    goto err;
err_after_async:
    uv_close((uv_handle_t *)&c->async, NULL);
    uv_run(c->loop, UV_RUN_DEFAULT);
err_after_loop:
    uv_loop_close(c->loop);
err_after_cond2:
    pthread_cond_destroy(&c->cb_done_cond);
err_after_cond1:
    pthread_cond_destroy(&c->notify_cond);
err_after_mutex:
    pthread_mutex_destroy(&c->mu);
err_after_alloc:
    if (!c->external) {
        free(c);
    }
err_after_parse:
    free(eps);
err:
    if (errmsg != NULL) {
        snprintf(errmsg, TN_ERRMSG_BUF_SIZE, "%s", msg);
    }
    return rv;
}

int tn_client_open2(const char *endpoints,
                    const struct tn_client_opts *opts,
                    tn_client **out,
                    char *errmsg)
{
    return clientCreate(endpoints, opts, NULL, out, errmsg);
}

int tn_client_open(const char *endpoints,
                   const struct tn_client_opts *opts,
                   tn_client **out)
{
    return clientCreate(endpoints, opts, NULL, out, NULL);
}

/* External client: the last handle closed. */
static void eventTimerClosedCb(uv_handle_t *h)
{
    tn_client *c = h->data;
    void (*cb)(void *data) = c->close_cb;
    void *data = c->close_data;
    struct list *l;
    bool free_client;

    pthread_mutex_lock(&c->mu);
    while ((l = listShift(&c->events)) != NULL) {
        struct event *ev = LIST_ENTRY(l, struct event, link);
        sessionUnrefLocked(ev->s); /* the user's reference keeps c */
        free(ev);
    }
    pthread_mutex_unlock(&c->mu);
    if (cb != NULL) {
        cb(data);
    }
    pthread_mutex_lock(&c->mu);
    free_client = clientUnrefLocked(c);
    pthread_mutex_unlock(&c->mu);
    if (free_client) {
        clientFree(c);
    }
}

static void closeTimerCb(uv_timer_t *t)
{
    loopShutdown(t->data);
}

void clientCloseExternal(tn_client *c, void (*cb)(void *data), void *data)
{
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->closing = true;
    c->notifier_stop = true;
    c->close_cb = cb;
    c->close_data = data;
    pthread_mutex_unlock(&c->mu);
    /* From the loop, not from inside this call: the calls in flight
     * complete with TN_CANCELED there, then the handles close and
     * eventTimerClosedCb runs. */
    uv_timer_start(&c->event_timer, closeTimerCb, 0, 0);
}

void tn_client_close(tn_client *c)
{
    bool on_notifier;
    bool free_client;

    if (c == NULL) {
        return;
    }
    if (c->external) {
        clientCloseExternal(c, NULL, NULL);
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    c->shutdown = true;
    pthread_mutex_unlock(&c->mu);
    uv_async_send(&c->async);
    pthread_join(c->thread, NULL);
    uv_loop_close(c->loop);

    pthread_mutex_lock(&c->mu);
    c->notifier_stop = true;
    pthread_cond_broadcast(&c->notify_cond);
    on_notifier =
        c->notifier_running && pthread_equal(pthread_self(), c->notifier);
    if (c->notifier_running && !on_notifier) {
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->notifier, NULL);
        pthread_mutex_lock(&c->mu);
    } else if (on_notifier) {
        pthread_detach(c->notifier);
    }
    free_client = clientUnrefLocked(c);
    pthread_mutex_unlock(&c->mu);
    if (free_client) {
        clientFree(c);
    }
}
