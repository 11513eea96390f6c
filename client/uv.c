/* libtenure on the caller's libuv loop (include/tenure/uv.h).
 *
 * An asynchronous call is a struct uv_call on the heap: the shared call
 * (request, engine op, reply hook) plus the request body, the hook's
 * context and the caller's callback. Its life: tn_uv_* validates and
 * prepares it, clientStart() hands it to the engine (on this thread: the
 * client is external), the engine completes it later from the loop,
 * callOpCb() runs the reply hook and then uvFinish(), which adopts or drops
 * what the call created, calls the caller's callback and frees it. */
#include "tenure/uv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "client.h"

enum {
    UV_SESSION_OPEN = 1,
    UV_SESSION_CLOSE,
    UV_ACQUIRE,
    UV_RELEASE,
    UV_STATUS,
    UV_CLUSTER
};

struct uv_call
{
    struct call call;
    int kind;
    struct tn_uv_req *req;
    tn_uv_done_cb done_cb;
    tn_uv_session_cb session_cb;
    tn_uv_lock_cb lock_cb;
    tn_session *s;
    tn_lock *l;
    char *resource; /* owned (status) */
    char what[128];
    union {
        Tn__SessionOpen open;
        Tn__SessionClose close;
        Tn__Acquire acquire;
        Tn__Release release;
        Tn__GetLock get;
        Tn__ClusterStatus cluster;
    } body;
    union {
        struct acquire_ctx acquire;
        struct status_ctx status;
    } ctx;
};

static struct uv_call *uvCallNew(int kind, struct tn_uv_req *req)
{
    struct uv_call *uc = calloc(1, sizeof *uc);
    if (uc != NULL) {
        uc->kind = kind;
        uc->req = req;
        uc->call.finish = NULL; /* set by uvStart */
    }
    return uc;
}

static void uvFinish(struct call *call, int rc)
{
    struct uv_call *uc = (struct uv_call *)call;
    struct tn_uv_req *req = uc->req;

    switch (uc->kind) {
    case UV_SESSION_OPEN:
        if (rc != TN_OK) {
            sessionDiscard(uc->s);
            uc->s = NULL;
        }
        uc->session_cb(req, rc, uc->s);
        break;
    case UV_SESSION_CLOSE:
        sessionUnref(uc->s);
        uc->done_cb(req, rc);
        break;
    case UV_ACQUIRE:
        if (rc == TN_OK) {
            lockAdopt(uc->l);
        } else {
            if (rc == TN_HELD || rc == TN_LOCK_DELAY) {
                conflictErrmsg(call->c, uc->l->resource,
                               &uc->ctx.acquire.local);
            }
            lockDiscard(uc->l);
            uc->l = NULL;
        }
        uc->lock_cb(req, rc, uc->l);
        break;
    case UV_RELEASE:
        lockReleaseEnd(uc->l, rc);
        uc->done_cb(req, rc);
        break;
    case UV_STATUS:
        if (rc != TN_OK) {
            memset(uc->ctx.status.out, 0, sizeof *uc->ctx.status.out);
        }
        uc->done_cb(req, rc);
        break;
    case UV_CLUSTER:
        uc->done_cb(req, rc);
        break;
    default:
        break;
    }
    free(uc->resource);
    free(uc);
}

static int uvStart(tn_client *c,
                   struct uv_call *uc,
                   bool mutating,
                   uint32_t timeout_ms)
{
    uc->call.finish = uvFinish;
    return clientStart(c, &uc->call, mutating, timeout_ms, uc->what);
}

static int uvCheck(tn_client *c, struct tn_uv_req *req, const void *cb)
{
    if (c == NULL || req == NULL || cb == NULL) {
        return TN_USAGE;
    }
    if (!c->external) {
        clientErrmsg(c, "tn_uv_* calls need a client from tn_uv_client_open");
        return TN_USAGE;
    }
    return TN_OK;
}

int tn_uv_client_open(uv_loop_t *loop,
                      const char *endpoints,
                      const struct tn_client_opts *opts,
                      tn_client **out)
{
    if (loop == NULL) {
        return TN_USAGE;
    }
    return clientCreate(endpoints, opts, loop, out, NULL);
}

void tn_uv_client_close(tn_client *c, void (*cb)(void *data), void *data)
{
    if (c == NULL) {
        return;
    }
    if (!c->external) {
        /* Misuse, but do what was asked. */
        tn_client_close(c);
        if (cb != NULL) {
            cb(data);
        }
        return;
    }
    clientCloseExternal(c, cb, data);
}

int tn_uv_session_open(tn_client *c,
                       struct tn_uv_req *req,
                       const char *holder,
                       uint32_t ttl_ms,
                       const struct tn_session_opts *opts,
                       tn_uv_session_cb cb)
{
    struct uv_call *uc;
    int rc;

    rc = uvCheck(c, req, (const void *)cb);
    if (rc != TN_OK) {
        return rc;
    }
    uc = uvCallNew(UV_SESSION_OPEN, req);
    if (uc == NULL) {
        clientErrmsg(c, "session_open: out of memory");
        return TN_NOMEM;
    }
    rc = sessionPrepare(c, holder, ttl_ms, opts, &uc->s);
    if (rc != TN_OK) {
        free(uc);
        return rc;
    }
    uc->session_cb = cb;
    snprintf(uc->what, sizeof uc->what, "session_open");
    tn__session_open__init(&uc->body.open);
    sessionOpenBody(uc->s, &uc->body.open, &uc->call);
    rc = uvStart(c, uc, true, c->timeout_ms);
    if (rc != TN_OK) {
        sessionDiscard(uc->s);
        free(uc);
    }
    return rc;
}

int tn_uv_session_close(tn_session *s, struct tn_uv_req *req, tn_uv_done_cb cb)
{
    struct uv_call *uc;
    tn_client *c;
    int rc;

    if (s == NULL) {
        return TN_USAGE;
    }
    c = s->c;
    rc = uvCheck(c, req, (const void *)cb);
    if (rc != TN_OK) {
        return rc;
    }
    uc = uvCallNew(UV_SESSION_CLOSE, req);
    if (uc == NULL) {
        clientErrmsg(c, "session_close: out of memory");
        return TN_NOMEM;
    }
    sessionMarkClosed(s);
    uc->s = s;
    uc->done_cb = cb;
    snprintf(uc->what, sizeof uc->what, "session_close");
    tn__request__init(&uc->call.req);
    tn__session_close__init(&uc->body.close);
    uc->body.close.session = s->id;
    uc->call.req.body_case = TN__REQUEST__BODY_SESSION_CLOSE;
    uc->call.req.session_close = &uc->body.close;
    uc->call.before = sessionCloseBefore;
    uc->call.ctx = s;
    rc = uvStart(c, uc, true, c->timeout_ms);
    if (rc != TN_OK) {
        /* The client is closing (its shutdown stopped the timers): the
         * handle goes anyway. */
        sessionUnref(s);
        free(uc);
    }
    return rc;
}

int tn_uv_lock_acquire(tn_session *s,
                       struct tn_uv_req *req,
                       const char *resource,
                       const struct tn_acquire_opts *opts,
                       tn_uv_lock_cb cb)
{
    struct uv_call *uc;
    tn_client *c;
    uint32_t timeout;
    int rc;

    if (s == NULL) {
        return TN_USAGE;
    }
    c = s->c;
    rc = uvCheck(c, req, (const void *)cb);
    if (rc != TN_OK) {
        return rc;
    }
    uc = uvCallNew(UV_ACQUIRE, req);
    if (uc == NULL) {
        clientErrmsg(c, "acquire: out of memory");
        return TN_NOMEM;
    }
    rc = lockPrepare(s, resource, opts, &uc->body.acquire, &uc->ctx.acquire,
                     &uc->call, &uc->l);
    if (rc != TN_OK) {
        free(uc);
        return rc;
    }
    uc->s = s;
    uc->lock_cb = cb;
    snprintf(uc->what, sizeof uc->what, "acquire %.100s", resource);
    timeout = opts != NULL && opts->timeout_ms != 0
                  ? opts->timeout_ms
                  : c->timeout_ms + (opts != NULL ? opts->wait_ms : 0);
    rc = uvStart(c, uc, true, timeout);
    if (rc != TN_OK) {
        lockDiscard(uc->l);
        free(uc);
    }
    return rc;
}

int tn_uv_lock_release(tn_lock *l, struct tn_uv_req *req, tn_uv_done_cb cb)
{
    struct uv_call *uc;
    tn_client *c;
    int rc;

    if (l == NULL) {
        return TN_USAGE;
    }
    c = l->s->c;
    rc = uvCheck(c, req, (const void *)cb);
    if (rc != TN_OK) {
        return rc;
    }
    uc = uvCallNew(UV_RELEASE, req);
    if (uc == NULL) {
        clientErrmsg(c, "release: out of memory");
        return TN_NOMEM;
    }
    rc = lockReleaseBegin(l);
    if (rc != TN_OK) {
        free(uc);
        return rc;
    }
    uc->l = l;
    uc->done_cb = cb;
    snprintf(uc->what, sizeof uc->what, "release %.100s", l->resource);
    tn__request__init(&uc->call.req);
    tn__release__init(&uc->body.release);
    uc->body.release.resource = l->resource;
    uc->body.release.token = l->token;
    uc->call.req.body_case = TN__REQUEST__BODY_RELEASE;
    uc->call.req.release = &uc->body.release;
    rc = uvStart(c, uc, true, c->timeout_ms);
    if (rc != TN_OK) {
        free(uc);
    }
    return rc;
}

int tn_uv_lock_status(tn_client *c,
                      struct tn_uv_req *req,
                      const char *resource,
                      const struct tn_read_opts *opts,
                      struct tn_lock_info *out,
                      tn_uv_done_cb cb)
{
    struct uv_call *uc;
    char msg[128];
    int rc;

    rc = uvCheck(c, req, (const void *)cb);
    if (rc != TN_OK) {
        return rc;
    }
    if (out == NULL) {
        return TN_USAGE;
    }
    memset(out, 0, sizeof *out);
    if (checkResource(resource, msg, sizeof msg) != 0) {
        clientErrmsg(c, "status: %s", msg);
        return TN_INVALID_ARGUMENT;
    }
    uc = uvCallNew(UV_STATUS, req);
    if (uc == NULL || (uc->resource = strdup(resource)) == NULL) {
        free(uc);
        clientErrmsg(c, "status: out of memory");
        return TN_NOMEM;
    }
    uc->done_cb = cb;
    snprintf(uc->what, sizeof uc->what, "status %.100s", resource);
    tn__request__init(&uc->call.req);
    tn__get_lock__init(&uc->body.get);
    uc->body.get.resource = uc->resource;
    uc->body.get.stale = opts != NULL && opts->stale;
    uc->call.req.body_case = TN__REQUEST__BODY_GET_LOCK;
    uc->call.req.get_lock = &uc->body.get;
    uc->ctx.status.resource = uc->resource;
    uc->ctx.status.out = out;
    uc->call.on_reply = readStatusReply;
    uc->call.ctx = &uc->ctx.status;
    rc = uvStart(c, uc, false,
                 opts != NULL && opts->timeout_ms != 0 ? opts->timeout_ms
                                                       : c->timeout_ms);
    if (rc != TN_OK) {
        free(uc->resource);
        free(uc);
    }
    return rc;
}

int tn_uv_cluster_status(tn_client *c,
                         struct tn_uv_req *req,
                         struct tn_cluster_info *out,
                         tn_uv_done_cb cb)
{
    struct uv_call *uc;
    int rc;

    rc = uvCheck(c, req, (const void *)cb);
    if (rc != TN_OK) {
        return rc;
    }
    if (out == NULL) {
        return TN_USAGE;
    }
    memset(out, 0, sizeof *out);
    uc = uvCallNew(UV_CLUSTER, req);
    if (uc == NULL) {
        clientErrmsg(c, "cluster status: out of memory");
        return TN_NOMEM;
    }
    uc->done_cb = cb;
    snprintf(uc->what, sizeof uc->what, "cluster status");
    tn__request__init(&uc->call.req);
    tn__cluster_status__init(&uc->body.cluster);
    uc->call.req.body_case = TN__REQUEST__BODY_CLUSTER_STATUS;
    uc->call.req.cluster_status = &uc->body.cluster;
    uc->call.on_reply = readClusterReply;
    uc->call.ctx = out;
    rc = uvStart(c, uc, false, c->timeout_ms);
    if (rc != TN_OK) {
        free(uc);
    }
    return rc;
}
