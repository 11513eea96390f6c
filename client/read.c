/* Read calls: lock status, watch, list, cluster status. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "client.h"

static char *dupOrEmpty(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    char *d = malloc(n + 1);
    if (d != NULL) {
        if (n > 0) {
            memcpy(d, s, n);
        }
        d[n] = '\0';
    }
    return d;
}

void readHolder(const Tn__Holder *in, struct tn_holder_info *out)
{
    memset(out, 0, sizeof *out);
    if (in == NULL) {
        out->expires_in_ms = -1;
        return;
    }
    out->session = in->session;
    out->token = in->token;
    out->acquired_at_ms = in->acquired_at_ms;
    out->expires_in_ms = in->expires_in_ms;
    out->ttl_ms = in->ttl_ms;
    snprintf(out->holder, sizeof out->holder, "%s",
             in->holder != NULL ? in->holder : "");
}

void readConflict(const Tn__LockInfo *in, int status, struct tn_conflict *out)
{
    memset(out, 0, sizeof *out);
    out->status = status;
    out->holder.expires_in_ms = -1;
    if (in == NULL) {
        return;
    }
    out->mode = (int)in->mode;
    out->n_holders = (uint32_t)in->n_holders;
    out->queue_len = in->queue_len;
    out->lock_delay_until_ms = in->lock_delay_until_ms;
    if (in->n_holders > 0) {
        readHolder(in->holders[0], &out->holder);
    }
}

int readLockInfo(const Tn__LockInfo *in, struct tn_lock_info *out)
{
    memset(out, 0, sizeof *out);
    out->resource = dupOrEmpty(in->resource);
    if (out->resource == NULL) {
        return TN_NOMEM;
    }
    out->mode = (int)in->mode;
    out->permits = in->permits;
    out->generation = in->generation;
    out->queue_len = in->queue_len;
    out->lock_delay_until_ms = in->lock_delay_until_ms;
    if (in->n_holders > 0) {
        out->holders = calloc(in->n_holders, sizeof *out->holders);
        if (out->holders == NULL) {
            free(out->resource);
            memset(out, 0, sizeof *out);
            return TN_NOMEM;
        }
        out->n_holders = in->n_holders;
        for (size_t i = 0; i < in->n_holders; i++) {
            readHolder(in->holders[i], &out->holders[i]);
        }
    }
    if (out->n_holders > 0) {
        out->state = TN_STATE_HELD;
    } else if (out->lock_delay_until_ms != 0) {
        out->state = TN_STATE_LOCK_DELAY;
    } else {
        out->state = TN_STATE_FREE;
    }
    return TN_OK;
}

void tn_lock_info_clear(struct tn_lock_info *info)
{
    if (info == NULL) {
        return;
    }
    free(info->resource);
    free(info->holders);
    memset(info, 0, sizeof *info);
}

void tn_lock_list_free(struct tn_lock_info *locks, size_t n)
{
    if (locks == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        tn_lock_info_clear(&locks[i]);
    }
    free(locks);
}

/* ------------------------------------------------------ lock status */

int readStatusReply(struct call *call, int rc, const Tn__Response *r)
{
    struct status_ctx *ctx = call->ctx;

    if (rc == TN_NOT_FOUND) {
        /* Free and unknown. */
        memset(ctx->out, 0, sizeof *ctx->out);
        ctx->out->resource = dupOrEmpty(ctx->resource);
        ctx->out->index = r != NULL ? r->index : 0;
        return ctx->out->resource != NULL ? TN_OK : TN_NOMEM;
    }
    if (rc != TN_OK) {
        return rc;
    }
    if (r->body_case == TN__RESPONSE__BODY_LOCK && r->lock != NULL) {
        rc = readLockInfo(r->lock, ctx->out);
        if (rc != TN_OK) {
            return rc;
        }
        if (ctx->out->resource[0] == '\0') {
            free(ctx->out->resource);
            ctx->out->resource = dupOrEmpty(ctx->resource);
            if (ctx->out->resource == NULL) {
                tn_lock_info_clear(ctx->out);
                return TN_NOMEM;
            }
        }
    } else {
        memset(ctx->out, 0, sizeof *ctx->out);
        ctx->out->resource = dupOrEmpty(ctx->resource);
        if (ctx->out->resource == NULL) {
            return TN_NOMEM;
        }
    }
    ctx->out->index = r->index;
    return TN_OK;
}

static int getLock(tn_client *c,
                   const char *resource,
                   bool stale,
                   uint64_t index,
                   uint32_t wait_ms,
                   uint32_t timeout_ms,
                   struct tn_lock_info *out)
{
    Tn__GetLock body = TN__GET_LOCK__INIT;
    struct status_ctx ctx;
    struct call call;
    char msg[128];
    int rc;

    if (out == NULL) {
        return TN_USAGE;
    }
    memset(out, 0, sizeof *out);
    if (c == NULL) {
        return TN_USAGE;
    }
    if (checkResource(resource, msg, sizeof msg) != 0) {
        clientErrmsg(c, "status: %s", msg);
        return TN_INVALID_ARGUMENT;
    }
    memset(&call, 0, sizeof call);
    tn__request__init(&call.req);
    body.resource = (char *)resource;
    body.stale = stale;
    body.index = index;
    body.wait_ms = wait_ms;
    call.req.body_case = TN__REQUEST__BODY_GET_LOCK;
    call.req.get_lock = &body;
    ctx.resource = resource;
    ctx.out = out;
    call.on_reply = readStatusReply;
    call.ctx = &ctx;
    call.op.may_wait = wait_ms > 0; /* a long poll: silence is normal */
    snprintf(msg, sizeof msg, "status %.100s", resource);
    rc = clientCall(c, &call, false, timeout_ms, msg);
    if (rc != TN_OK) {
        memset(out, 0, sizeof *out);
    }
    return rc;
}

int tn_lock_status(tn_client *c,
                   const char *resource,
                   const struct tn_read_opts *opts,
                   struct tn_lock_info *out)
{
    uint32_t timeout;
    if (c == NULL) {
        return TN_USAGE;
    }
    timeout = opts != NULL && opts->timeout_ms != 0 ? opts->timeout_ms
                                                    : c->timeout_ms;
    return getLock(c, resource, opts != NULL && opts->stale, 0, 0, timeout,
                   out);
}

int tn_lock_watch(tn_client *c,
                  const char *resource,
                  uint64_t after_index,
                  uint32_t wait_ms,
                  struct tn_lock_info *out)
{
    if (c == NULL) {
        return TN_USAGE;
    }
    return getLock(c, resource, false, after_index, wait_ms,
                   c->timeout_ms + wait_ms, out);
}

/* -------------------------------------------------------------- list */

struct list_ctx
{
    struct tn_lock_info *locks;
    size_t n;
};

static int listReply(struct call *call, int rc, const Tn__Response *r)
{
    struct list_ctx *ctx = call->ctx;
    const Tn__LockList *ll;

    if (rc != TN_OK) {
        return rc;
    }
    if (r->body_case != TN__RESPONSE__BODY_LIST || r->list == NULL ||
        r->list->n_locks == 0) {
        ctx->locks = NULL;
        ctx->n = 0;
        return TN_OK;
    }
    ll = r->list;
    ctx->locks = calloc(ll->n_locks, sizeof *ctx->locks);
    if (ctx->locks == NULL) {
        return TN_NOMEM;
    }
    for (size_t i = 0; i < ll->n_locks; i++) {
        rc = readLockInfo(ll->locks[i], &ctx->locks[i]);
        if (rc != TN_OK) {
            tn_lock_list_free(ctx->locks, i);
            ctx->locks = NULL;
            return rc;
        }
        ctx->locks[i].index = r->index;
    }
    ctx->n = ll->n_locks;
    return TN_OK;
}

int tn_lock_list(tn_client *c,
                 const char *prefix,
                 uint32_t limit,
                 const struct tn_read_opts *opts,
                 struct tn_lock_info **out,
                 size_t *n)
{
    Tn__ListLocks body = TN__LIST_LOCKS__INIT;
    struct list_ctx ctx = { NULL, 0 };
    struct call call;
    uint32_t timeout;
    int rc;

    if (c == NULL || out == NULL || n == NULL) {
        return TN_USAGE;
    }
    *out = NULL;
    *n = 0;
    if (prefix == NULL) {
        prefix = "";
    }
    if (strlen(prefix) > 512 || checkText(prefix, strlen(prefix)) != 0) {
        clientErrmsg(c, "list: bad prefix");
        return TN_INVALID_ARGUMENT;
    }
    timeout = opts != NULL && opts->timeout_ms != 0 ? opts->timeout_ms
                                                    : c->timeout_ms;
    memset(&call, 0, sizeof call);
    tn__request__init(&call.req);
    body.prefix = (char *)prefix;
    body.stale = opts != NULL && opts->stale;
    body.limit = limit;
    call.req.body_case = TN__REQUEST__BODY_LIST_LOCKS;
    call.req.list_locks = &body;
    call.on_reply = listReply;
    call.ctx = &ctx;
    rc = clientCall(c, &call, false, timeout, "list");
    if (rc == TN_OK) {
        *out = ctx.locks;
        *n = ctx.n;
    }
    return rc;
}

/* ----------------------------------------------------------- cluster */

void tn_cluster_info_clear(struct tn_cluster_info *info)
{
    if (info == NULL) {
        return;
    }
    free(info->endpoint);
    free(info->state);
    free(info->leader_rpc);
    free(info->leader_http);
    for (size_t i = 0; i < info->n_members; i++) {
        free(info->members[i].raft_address);
        free(info->members[i].rpc_address);
        free(info->members[i].http_address);
        free(info->members[i].role);
    }
    free(info->members);
    memset(info, 0, sizeof *info);
}

int readClusterReply(struct call *call, int rc, const Tn__Response *r)
{
    struct tn_cluster_info *out = call->ctx;
    const Tn__ClusterInfo *ci;
    const char *ep;

    if (rc != TN_OK) {
        return rc;
    }
    if (r->body_case != TN__RESPONSE__BODY_CLUSTER || r->cluster == NULL) {
        snprintf(call->op.errmsg, sizeof call->op.errmsg,
                 "cluster_status reply without cluster info");
        return TN_PROTOCOL;
    }
    ci = r->cluster;
    ep = engineCurrentEndpoint(&call->c->engine);
    out->node_id = ci->node_id;
    out->leader_id = ci->leader_id;
    out->term = ci->term;
    out->commit_index = ci->commit_index;
    out->applied_index = ci->applied_index;
    out->endpoint = dupOrEmpty(ep);
    out->state = dupOrEmpty(ci->state);
    out->leader_rpc = dupOrEmpty(ci->leader_rpc);
    out->leader_http = dupOrEmpty(ci->leader_http);
    if (out->endpoint == NULL || out->state == NULL ||
        out->leader_rpc == NULL || out->leader_http == NULL) {
        goto nomem;
    }
    if (ci->n_members > 0) {
        out->members = calloc(ci->n_members, sizeof *out->members);
        if (out->members == NULL) {
            goto nomem;
        }
        out->n_members = ci->n_members;
        for (size_t i = 0; i < ci->n_members; i++) {
            const Tn__Member *m = ci->members[i];
            struct tn_member_info *o = &out->members[i];
            o->id = m->id;
            o->raft_address = dupOrEmpty(m->raft_address);
            o->rpc_address = dupOrEmpty(m->rpc_address);
            o->http_address = dupOrEmpty(m->http_address);
            o->role = dupOrEmpty(m->role);
            if (o->raft_address == NULL || o->rpc_address == NULL ||
                o->http_address == NULL || o->role == NULL) {
                goto nomem;
            }
        }
    }
    return TN_OK;
nomem:
    tn_cluster_info_clear(out);
    return TN_NOMEM;
}

int tn_cluster_status(tn_client *c, struct tn_cluster_info *out)
{
    Tn__ClusterStatus body = TN__CLUSTER_STATUS__INIT;
    struct call call;
    int rc;

    if (c == NULL || out == NULL) {
        return TN_USAGE;
    }
    memset(out, 0, sizeof *out);
    memset(&call, 0, sizeof call);
    tn__request__init(&call.req);
    call.req.body_case = TN__REQUEST__BODY_CLUSTER_STATUS;
    call.req.cluster_status = &body;
    call.on_reply = readClusterReply;
    call.ctx = out;
    rc = clientCall(c, &call, false, c->timeout_ms, "cluster status");
    if (rc != TN_OK) {
        tn_cluster_info_clear(out);
    }
    return rc;
}
