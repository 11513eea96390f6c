/* Operator calls: membership, leadership transfer, snapshots. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

void tn_free(void *p)
{
    free(p);
}

/* Runs a body-only request; the answer carries no payload. */
static int simpleCall(tn_client *c,
                      struct call *call,
                      bool mutating,
                      const char *what)
{
    /* Membership changes wait for catch-up rounds and a transfer for an
     * election: silence on the connection is normal, and these calls are
     * not idempotent, so the hung-connection watchdog must not resend
     * them (the call's deadline still bounds them). */
    call->op.may_wait = true;
    return clientCall(c, call, mutating, c->timeout_ms, what);
}

int tn_member_add(tn_client *c, uint64_t id, const char *raft_address)
{
    Tn__MemberAdd body = TN__MEMBER_ADD__INIT;
    struct endpoint ep;
    struct call call;
    char msg[128];

    if (c == NULL) {
        return TN_USAGE;
    }
    if (id == 0) {
        clientErrmsg(c, "member add: ids start at 1");
        return TN_INVALID_ARGUMENT;
    }
    if (raft_address == NULL ||
        endpointParse(raft_address, strlen(raft_address), &ep, msg,
                      sizeof msg) != 0) {
        clientErrmsg(c, "member add: raft address: %s",
                     raft_address == NULL ? "missing" : msg);
        return TN_INVALID_ARGUMENT;
    }
    memset(&call, 0, sizeof call);
    tn__request__init(&call.req);
    body.id = id;
    body.raft_address = (char *)raft_address;
    call.req.body_case = TN__REQUEST__BODY_MEMBER_ADD;
    call.req.member_add = &body;
    /* A configuration change, not a logged command: no exactly-once
     * identity (a retry of a change already made is refused, harmlessly). */
    return simpleCall(c, &call, false, "member add");
}

int tn_member_remove(tn_client *c, uint64_t id)
{
    Tn__MemberRemove body = TN__MEMBER_REMOVE__INIT;
    struct call call;

    if (c == NULL) {
        return TN_USAGE;
    }
    if (id == 0) {
        clientErrmsg(c, "member remove: ids start at 1");
        return TN_INVALID_ARGUMENT;
    }
    memset(&call, 0, sizeof call);
    tn__request__init(&call.req);
    body.id = id;
    call.req.body_case = TN__REQUEST__BODY_MEMBER_REMOVE;
    call.req.member_remove = &body;
    return simpleCall(c, &call, false, "member remove");
}

int tn_leader_transfer(tn_client *c, uint64_t id)
{
    Tn__LeaderTransfer body = TN__LEADER_TRANSFER__INIT;
    struct call call;

    if (c == NULL) {
        return TN_USAGE;
    }
    memset(&call, 0, sizeof call);
    tn__request__init(&call.req);
    body.id = id;
    call.req.body_case = TN__REQUEST__BODY_TRANSFER;
    call.req.transfer = &body;
    return simpleCall(c, &call, false, "leader transfer");
}

struct save_ctx
{
    void *buf;
    size_t len;
};

static int saveReply(struct call *call, int rc, const Tn__Response *r)
{
    struct save_ctx *ctx = call->ctx;

    if (rc != TN_OK) {
        return rc;
    }
    if (r->body_case != TN__RESPONSE__BODY_SNAPSHOT) {
        snprintf(call->op.errmsg, sizeof call->op.errmsg,
                 "snapshot save reply without a snapshot");
        return TN_PROTOCOL;
    }
    ctx->buf = malloc(r->snapshot.len > 0 ? r->snapshot.len : 1);
    if (ctx->buf == NULL) {
        return TN_NOMEM;
    }
    if (r->snapshot.len > 0) {
        memcpy(ctx->buf, r->snapshot.data, r->snapshot.len);
    }
    ctx->len = r->snapshot.len;
    return TN_OK;
}

int tn_snapshot_save(tn_client *c, void **buf, size_t *len)
{
    Tn__SnapshotSave body = TN__SNAPSHOT_SAVE__INIT;
    struct save_ctx ctx = { NULL, 0 };
    struct call call;
    int rc;

    if (c == NULL || buf == NULL || len == NULL) {
        return TN_USAGE;
    }
    memset(&call, 0, sizeof call);
    tn__request__init(&call.req);
    call.req.body_case = TN__REQUEST__BODY_SNAPSHOT_SAVE;
    call.req.snapshot_save = &body;
    call.on_reply = saveReply;
    call.ctx = &ctx;
    rc = simpleCall(c, &call, false, "snapshot save");
    if (rc == TN_OK) {
        *buf = ctx.buf;
        *len = ctx.len;
    }
    return rc;
}

int tn_snapshot_restore(tn_client *c, const void *buf, size_t len)
{
    Tn__SnapshotRestore body = TN__SNAPSHOT_RESTORE__INIT;
    struct call call;

    if (c == NULL || (buf == NULL && len > 0)) {
        return TN_USAGE;
    }
    memset(&call, 0, sizeof call);
    tn__request__init(&call.req);
    body.snapshot.data = (uint8_t *)buf;
    body.snapshot.len = len;
    call.req.body_case = TN__REQUEST__BODY_SNAPSHOT_RESTORE;
    call.req.snapshot_restore = &body;
    /* Logged through Raft like the other mutations: exactly once. */
    return simpleCall(c, &call, true, "snapshot restore");
}
