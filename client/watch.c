/* Streamed watches: one engine stream op per tn_watch.
 *
 * Happy path: tn_watch_open -> (loop) engineSubmit of a Watch request ->
 * each event (Response with more): the request's resume index becomes the
 * event's index, the event is queued for tn_watch_next (blocking client)
 * or handed to the callback (libuv client) -> tn_watch_close -> (loop)
 * engineCancel (the server gets a WatchCancel) -> op cb with TN_CANCELED ->
 * free.
 * Failure modes: a final error from the cluster or the client closing
 * completes the op (ended, end_rc); reconnects and redirects happen inside
 * the engine, which resends the request with the latest index.
 *
 * Who frees the handle: the loop, once the op has completed and the user
 * closed it (close_ran); or tn_watch_close itself when the loop is gone
 * (the client was closed) and the op has completed. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "client.h"
#include "tenure/uv.h"

#define WATCH_QUEUE_MAX 64

struct watchEvent
{
    struct list link;
    struct tn_watch_event ev;
};

struct tn_watch
{
    tn_client *c;  /* holds a reference */
    char *key;     /* owned */
    int flags;
    Tn__Request req;
    Tn__Watch body;
    struct engine_op op;
    struct task open_task;
    struct task close_task;
    bool close_ran; /* (loop) the user closed it */
    bool op_done;   /* mu: the op completed; the loop is done with it */
    bool orphan;    /* mu: closed while the loop was gone */

    /* Blocking client (mu). */
    pthread_cond_t cond;
    struct list events; /* struct watchEvent */
    size_t n_events;
    bool ended;
    int end_rc;
    char end_msg[ENGINE_ERRMSG_SIZE];
    uint64_t index;

    /* libuv client. */
    tn_uv_watch_cb cb;
    void *data;
};

void tn_watch_event_clear(struct tn_watch_event *ev)
{
    if (ev == NULL) {
        return;
    }
    tn_lock_list_free(ev->locks, ev->n_locks);
    memset(ev, 0, sizeof *ev);
}

static void watchFree(tn_watch *w)
{
    tn_client *c = w->c;
    struct list *l;
    bool free_client;

    while ((l = listShift(&w->events)) != NULL) {
        struct watchEvent *we = LIST_ENTRY(l, struct watchEvent, link);
        tn_watch_event_clear(&we->ev);
        free(we);
    }
    if (w->cb == NULL) {
        pthread_cond_destroy(&w->cond);
    }
    free(w->key);
    free(w);
    pthread_mutex_lock(&c->mu);
    free_client = clientUnrefLocked(c);
    pthread_mutex_unlock(&c->mu);
    if (free_client) {
        clientFree(c);
    }
}

/* Decode an event. Returns TN_OK or TN_NOMEM / TN_PROTOCOL. */
static int watchDecode(tn_watch *w,
                       const Tn__Response *r,
                       struct tn_watch_event *out)
{
    int rc;

    memset(out, 0, sizeof *out);
    out->index = r->index;
    if (r->body_case == TN__RESPONSE__BODY_LOCK && r->lock != NULL &&
        !(w->flags & TN_WATCH_PREFIX)) {
        out->locks = calloc(1, sizeof *out->locks);
        if (out->locks == NULL) {
            return TN_NOMEM;
        }
        rc = readLockInfo(r->lock, &out->locks[0]);
        if (rc == TN_OK && out->locks[0].resource[0] == '\0') {
            free(out->locks[0].resource);
            out->locks[0].resource = strdup(w->key);
            rc = out->locks[0].resource != NULL ? TN_OK : TN_NOMEM;
        }
        if (rc != TN_OK) {
            tn_lock_info_clear(&out->locks[0]);
            free(out->locks);
            out->locks = NULL;
            return rc;
        }
        out->locks[0].index = r->index;
        out->n_locks = 1;
        return TN_OK;
    }
    if (r->body_case == TN__RESPONSE__BODY_LIST && (w->flags & TN_WATCH_PREFIX)) {
        const Tn__LockList *ll = r->list;
        if (ll == NULL || ll->n_locks == 0) {
            return TN_OK;
        }
        out->locks = calloc(ll->n_locks, sizeof *out->locks);
        if (out->locks == NULL) {
            return TN_NOMEM;
        }
        for (size_t i = 0; i < ll->n_locks; i++) {
            rc = readLockInfo(ll->locks[i], &out->locks[i]);
            if (rc != TN_OK) {
                tn_lock_list_free(out->locks, i);
                out->locks = NULL;
                return rc;
            }
            out->locks[i].index = r->index;
        }
        out->n_locks = ll->n_locks;
        return TN_OK;
    }
    return TN_PROTOCOL;
}

/* (loop) An event of the stream. */
static void watchEventCb(struct engine_op *op, const Tn__Response *r)
{
    tn_watch *w = op->data;
    tn_client *c = w->c;
    struct watchEvent *we;
    int rc;

    if (w->close_ran) {
        return;
    }
    /* Resume from here after a reconnect or a redirect. */
    if (r->index > w->body.index) {
        w->body.index = r->index;
    }
    if (w->cb != NULL) {
        struct tn_watch_event ev;
        if (watchDecode(w, r, &ev) == TN_OK) {
            w->index = w->body.index;
            w->cb(w, TN_OK, &ev, w->data); /* may close @w */
            tn_watch_event_clear(&ev);
        }
        return;
    }
    we = calloc(1, sizeof *we);
    if (we == NULL) {
        return; /* the next event carries the state again */
    }
    rc = watchDecode(w, r, &we->ev);
    if (rc != TN_OK) {
        free(we);
        return;
    }
    pthread_mutex_lock(&c->mu);
    w->index = w->body.index;
    if (w->n_events >= WATCH_QUEUE_MAX) {
        /* Coalesce: the newest replaces the last one kept. */
        struct watchEvent *last =
            LIST_ENTRY(w->events.prev, struct watchEvent, link);
        tn_watch_event_clear(&last->ev);
        last->ev = we->ev;
        free(we);
    } else {
        listPush(&w->events, &we->link);
        w->n_events++;
    }
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&c->mu);
}

/* (loop) The stream ended. */
static void watchOpCb(struct engine_op *op, int rc, const Tn__Response *r)
{
    tn_watch *w = op->data;
    tn_client *c = w->c;
    bool orphan;
    (void)r;

    if (w->close_ran) {
        watchFree(w); /* closed by the user: nobody to tell */
        return;
    }
    if (rc == TN_OK) {
        rc = TN_PROTOCOL; /* a stream never ends with OK */
        snprintf(op->errmsg, sizeof op->errmsg, "watch ended without error");
    }
    if (w->cb != NULL) {
        w->op_done = true;
        w->cb(w, rc, NULL, w->data); /* may close @w */
        return;
    }
    pthread_mutex_lock(&c->mu);
    w->op_done = true;
    w->ended = true;
    w->end_rc = rc;
    snprintf(w->end_msg, sizeof w->end_msg, "%s",
             op->errmsg[0] ? op->errmsg : tn_strerror(rc));
    orphan = w->orphan;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&c->mu);
    if (orphan) {
        watchFree(w);
    }
}

static void watchOpenRun(struct task *t, tn_client *c)
{
    tn_watch *w = LIST_ENTRY(t, tn_watch, open_task);
    engineSubmit(&c->engine, &w->op);
}

static void watchCloseRun(struct task *t, tn_client *c)
{
    tn_watch *w = LIST_ENTRY(t, tn_watch, close_task);
    bool done;

    w->close_ran = true;
    pthread_mutex_lock(&c->mu);
    done = w->op_done;
    pthread_mutex_unlock(&c->mu);
    if (done) {
        watchFree(w);
    } else {
        engineCancel(&c->engine, &w->op); /* watchOpCb frees it */
    }
}

static int watchCreate(tn_client *c,
                       const char *resource,
                       int flags,
                       uint64_t after_index,
                       tn_watch **out)
{
    tn_watch *w;
    char msg[128];

    if (resource == NULL) {
        resource = "";
    }
    if (flags & TN_WATCH_PREFIX) {
        if (strlen(resource) > CHECK_RESOURCE_MAX ||
            checkText(resource, strlen(resource)) != 0) {
            clientErrmsg(c, "watch: bad prefix");
            return TN_INVALID_ARGUMENT;
        }
    } else if (checkResource(resource, msg, sizeof msg) != 0) {
        clientErrmsg(c, "watch: %s", msg);
        return TN_INVALID_ARGUMENT;
    }
    w = calloc(1, sizeof *w);
    if (w == NULL) {
        return TN_NOMEM;
    }
    w->key = strdup(resource);
    if (w->key == NULL) {
        free(w);
        return TN_NOMEM;
    }
    w->c = c;
    w->flags = flags;
    w->index = after_index;
    listInit(&w->events);
    tn__request__init(&w->req);
    tn__watch__init(&w->body);
    w->body.resource = w->key;
    w->body.prefix = (flags & TN_WATCH_PREFIX) != 0;
    w->body.stale = (flags & TN_WATCH_STALE) != 0;
    w->body.index = after_index;
    w->req.body_case = TN__REQUEST__BODY_WATCH;
    w->req.watch = &w->body;
    w->op.data = w;
    w->op.request = &w->req;
    w->op.stream = true;
    w->op.may_wait = true; /* silence is normal */
    w->op.deadline_ns = UINT64_MAX;
    w->op.cb = watchOpCb;
    w->op.event_cb = watchEventCb;
    w->open_task.run = watchOpenRun;
    w->close_task.run = watchCloseRun;
    *out = w;
    return TN_OK;
}

/* Take a client reference for @w and start it on the loop. */
static int watchStart(tn_client *c, tn_watch *w)
{
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        clientErrmsg(c, "watch: client is closed");
        return TN_CLOSED;
    }
    c->refs++;
    pthread_mutex_unlock(&c->mu);
    if (clientPostTask(c, &w->open_task) != TN_OK) {
        bool free_client;
        pthread_mutex_lock(&c->mu);
        free_client = clientUnrefLocked(c);
        pthread_mutex_unlock(&c->mu);
        if (free_client) {
            clientFree(c);
        }
        clientErrmsg(c, "watch: client is closed");
        return TN_CLOSED;
    }
    return TN_OK;
}

int tn_watch_open(tn_client *c,
                  const char *resource,
                  int flags,
                  uint64_t after_index,
                  tn_watch **out)
{
    pthread_condattr_t attr;
    tn_watch *w;
    int rc;

    if (c == NULL || out == NULL) {
        return TN_USAGE;
    }
    *out = NULL;
    rc = clientCheckBlocking(c, "watch");
    if (rc != TN_OK) {
        return rc;
    }
    rc = watchCreate(c, resource, flags, after_index, &w);
    if (rc != TN_OK) {
        return rc;
    }
    if (pthread_condattr_init(&attr) != 0 ||
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&w->cond, &attr) != 0) {
        free(w->key);
        free(w);
        clientErrmsg(c, "watch: pthread_cond_init failed");
        return TN_SYSTEM;
    }
    pthread_condattr_destroy(&attr);
    rc = watchStart(c, w);
    if (rc != TN_OK) {
        pthread_cond_destroy(&w->cond);
        free(w->key);
        free(w);
        return rc;
    }
    *out = w;
    return TN_OK;
}

int tn_watch_next(tn_watch *w, uint32_t timeout_ms, struct tn_watch_event *out)
{
    tn_client *c;
    struct timespec until;
    int rc = TN_TIMEOUT;

    if (w == NULL || out == NULL || w->cb != NULL) {
        return TN_USAGE;
    }
    memset(out, 0, sizeof *out);
    c = w->c;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    for (;;) {
        struct list *l = listShift(&w->events);
        if (l != NULL) {
            struct watchEvent *we = LIST_ENTRY(l, struct watchEvent, link);
            w->n_events--;
            *out = we->ev;
            free(we);
            rc = TN_OK;
            break;
        }
        if (w->ended) {
            rc = w->end_rc;
            clientErrmsgLocked(c, "watch: %s", w->end_msg);
            break;
        }
        if (pthread_cond_timedwait(&w->cond, &c->mu, &until) == ETIMEDOUT) {
            if (listEmpty(&w->events) && !w->ended) {
                clientErrmsgLocked(c, "watch: no event in %u ms",
                                   (unsigned)timeout_ms);
                break;
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

uint64_t tn_watch_index(tn_watch *w)
{
    uint64_t index;
    if (w == NULL) {
        return 0;
    }
    pthread_mutex_lock(&w->c->mu);
    index = w->index;
    pthread_mutex_unlock(&w->c->mu);
    return index;
}

void tn_watch_close(tn_watch *w)
{
    tn_client *c;
    bool done;

    if (w == NULL) {
        return;
    }
    c = w->c;
    if (w->cb != NULL) {
        tn_uv_watch_close(w);
        return;
    }
    if (clientPostTask(c, &w->close_task) == TN_OK) {
        return; /* the loop frees it */
    }
    /* The client is closed: its loop completes (or completed) the op. */
    pthread_mutex_lock(&c->mu);
    done = w->op_done;
    w->orphan = true;
    pthread_mutex_unlock(&c->mu);
    if (done) {
        watchFree(w);
    }
}

/* ------------------------------------------------------------- libuv */

int tn_uv_watch_open(tn_client *c,
                     const char *resource,
                     int flags,
                     uint64_t after_index,
                     tn_uv_watch_cb cb,
                     void *data,
                     tn_watch **out)
{
    tn_watch *w;
    int rc;

    if (c == NULL || out == NULL || cb == NULL || !c->external) {
        return TN_USAGE;
    }
    rc = watchCreate(c, resource, flags, after_index, &w);
    if (rc != TN_OK) {
        return rc;
    }
    w->cb = cb;
    w->data = data;
    rc = watchStart(c, w);
    if (rc != TN_OK) {
        free(w->key);
        free(w);
        return rc;
    }
    *out = w;
    return TN_OK;
}

void tn_uv_watch_close(tn_watch *w)
{
    if (w == NULL || w->close_ran) {
        return;
    }
    w->close_ran = true;
    if (w->op_done) {
        watchFree(w);
    } else {
        engineCancel(&w->c->engine, &w->op); /* watchOpCb frees it */
    }
}
