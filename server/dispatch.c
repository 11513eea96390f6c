/* The dispatch: request → batched command → raft adapter → reply.
 *
 * Request paths (every reply is delivered later from an idle handle, never
 * from inside dispatchSubmit):
 *   cluster status, stale reads     answered from this node's memory;
 *   linearizable reads (leader)     wait for the next read barrier, then
 *                                   answered from the FSM;
 *   keepalive (leader, ready)       answered from the lease keeper's memory;
 *   mutations (leader)              appended to the open batch; the batch is
 *                                   proposed as one Raft entry at the next
 *                                   idle; results come back from the applied
 *                                   hook; a queued acquire waits for its
 *                                   FSM_EVENT_WAIT_DONE;
 *   anything on a follower          NOT_LEADER with the leader's addresses,
 *                                   or relayed when Request.forward is set;
 *   streamed watches                like reads for the first event (barrier
 *                                   unless stale; never relayed), then
 *                                   parked on `streams`; a change moves
 *                                   one to `fired`, the next idle answers
 *                                   it with the current state (more set)
 *                                   and, once delivered, it is parked
 *                                   again at the event's index. It ends
 *                                   with a final answer: CANCELED (cancel,
 *                                   shutdown) or NOT_LEADER (a
 *                                   linearizable one when leadership goes).
 *                                   A stream parked for watch_progress_ms
 *                                   is fired as if it changed (a progress
 *                                   event), unless it is linearizable and
 *                                   this node is not a leader with a fresh
 *                                   majority confirmation.
 *
 * Leadership: a new leader appends a barrier first; until it is applied
 * (`ready`), keepalives and reads wait. Once ready every session gets a
 * deadline of at least ttl + election timeout from now (DESIGN §4 rule 4).
 * Only the leader proposes expiries, naming (session, epoch), from its own
 * monotonic deadlines (rule 2). */
#include "dispatch.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dispatch_impl.h"
#include "forward.h"
#include "leases.h"
#include "lib/arena.h"
#include "lib/log.h"
#include "metrics.h"

enum {
    REQ_NEW = 0,
    REQ_BATCHED,   /* in a batch (open, ready or proposed) */
    REQ_WAITING,   /* queued acquire, waiting for FSM_EVENT_WAIT_DONE */
    REQ_READ,      /* waiting for a read barrier */
    REQ_NOT_READY, /* leader not ready yet */
    REQ_FORWARDED,
    REQ_WATCH,     /* long-poll: waiting for a change or its deadline */
    REQ_STREAM,    /* streamed watch: parked until the next change */
    REQ_DONE       /* reply ready, on the done queue */
};

/* Recently changed resources: a fixed table, indexed by a hash of the
 * resource, of the latest change index among the resources of each slot,
 * so that a watch on a resource that was freed (and so forgotten by the
 * FSM) can still tell whether it changed after a given index. Slots are
 * written in index order, so a slot's index is at least the last change of
 * each of its resources: a watch may answer early (a collision), which
 * clients must tolerate anyway, never late. */
#define CHANGED_SLOTS 65536
#define MAX_WATCHES 10000
#define MAX_STREAMS 10000 /* streamed watches per node */

/* ------------------------------------------------------------- arenas */

/* A copy of @s (NULL: "") in @a. */
static char *arenaStrdup(struct tn_arena *a, const char *s)
{
    return tnArenaStrndup(a, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

/* ------------------------------------------------------------- replies */

struct reply
{
    Tn__Response resp;
    Tn__Response *unpacked; /* forwarded replies: owned by protobuf-c */
    struct tn_arena arena;
};

static struct reply *replyNew(void)
{
    struct reply *r = calloc(1, sizeof *r);
    if (r != NULL) {
        tn__response__init(&r->resp);
    }
    return r;
}

static void replyFree(struct reply *r)
{
    if (r->unpacked != NULL) {
        tn__response__free_unpacked(r->unpacked, NULL);
    }
    tnArenaFree(&r->arena);
    free(r);
}

/* -------------------------------------------------------------- batches */

struct dispatch;

struct batch
{
    struct dispatch *d;
    tn_queue queue;               /* ready or proposed list */
    Tn__Batch msg;
    Tn__Command **cmds;           /* arena */
    struct dispatch_req **reqs;   /* NULL for internal commands */
    size_t n;
    size_t cap;
    uint64_t nonce;
    uint64_t sent_ms;             /* when proposed (leader clock) */
    bool applied;
    struct adapter_propose prop;
    struct tn_arena arena;           /* internal sub-messages */
};

struct dispatch
{
    uv_loop_t *loop;
    struct fsm *fsm;
    struct adapter *adapter;
    struct dispatch_config cfg;
    struct leases leases;
    struct forwarder *fwd;

    uint64_t boot_nonce;
    uint64_t next_nonce;
    uint64_t self_client_id;      /* for queued acquires without an id */
    uint64_t self_seq;
    uint64_t last_stamp;          /* cluster time last stamped */

    struct batch *open;
    struct batch *parked;         /* queued acquires waiting for a ride */
    tn_queue full;                /* full batches waiting for a slot */
    tn_queue proposed;
    unsigned outstanding;

    tn_queue reads;               /* REQ_READ, waiting for a barrier */
    tn_queue reads_inflight;
    bool read_barrier_busy;
    struct adapter_propose read_barrier;

    tn_queue not_ready;           /* REQ_NOT_READY */
    tn_queue watches;             /* REQ_WATCH */
    unsigned n_watches;
    tn_queue fired;               /* watches to answer at the next idle */
    tn_queue streams;             /* REQ_STREAM */
    unsigned n_streams;           /* streams accepted, not yet ended */
    uint64_t *changed;            /* CHANGED_SLOTS: latest change index of
                                   * the resources hashed to each slot */
    tn_queue waiters;             /* REQ_WAITING */
    tn_queue done;                /* REQ_DONE */

    bool is_leader;
    bool ready;
    uint64_t leader_term;
    bool start_barrier_busy;
    struct adapter_propose start_barrier;
    /* DESIGN §4 rule 3: keepalives are answered from memory only while a
     * majority acknowledged something this leader sent less than an
     * election timeout ago. quorum_ms is the send time of the newest
     * acknowledged proposal; an idle leader refreshes it with barriers. */
    uint64_t quorum_ms;
    bool quorum_busy;
    uint64_t quorum_sent_ms;
    struct adapter_propose quorum_barrier;
    tn_queue confirm;             /* keepalives waiting for a confirmation */
    bool tick_busy;
    uint64_t member_check_ms;
    bool member_retry;            /* no ready leader at the last check */

    uv_idle_t idle;
    uv_timer_t timer;
    bool idle_active;
    bool closing;
    int open_handles;
    void (*close_cb)(void *data);
    void *close_data;

    struct dispatch_stats stats;
    uint64_t completed;
    struct metrics metrics;

    /* Disk-space alarms: this node's, and (as leader) the ones followers
     * report every second while they are short. */
    bool disk_low;
    uint64_t disk_free;
    uint64_t last_transfer_ms;
    struct
    {
        uint64_t id;
        uint64_t until_ms;
        uint64_t free_bytes;
    } alarms[16];
};

static uint64_t monoMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t monoNs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t realMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t random64(void)
{
    uint64_t x = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f != NULL) {
        if (fread(&x, sizeof x, 1, f) != 1) {
            x = 0;
        }
        fclose(f);
    }
    if (x == 0) {
        x = monoNs() ^ ((uint64_t)getpid() << 32);
    }
    return x;
}

static void scheduleIdle(struct dispatch *d);

static uint64_t resourceHash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h | 1;
}

/* The latest change of any resource in @res's slot: at least the index of
 * @res's own last change (slots are overwritten in index order). */
static uint64_t changedSlotIndex(struct dispatch *d, const char *res, size_t n)
{
    uint64_t h = resourceHash(res, n);
    return d->changed[(size_t)(h & (CHANGED_SLOTS - 1))];
}

/* ------------------------------------------------------------ completion */

static void deliverDone(struct dispatch *d);
static void streamRearm(struct dispatch *d, struct dispatch_req *req);

static void complete(struct dispatch *d,
                     struct dispatch_req *req,
                     struct reply *r)
{
    req->priv = r;
    req->state = REQ_DONE;
    tn_queue_insert_tail(&d->done, &req->queue);
    if (d->closing && d->fwd == NULL) {
        /* Closed: the idle handle is gone, deliver now (a front end waits
         * for every callback before it closes its connections). */
        deliverDone(d);
        return;
    }
    scheduleIdle(d);
}

/* Fill the leader hint of a NOT_LEADER reply; NO_QUORUM if none known. */
static void replyLeaderHint(struct dispatch *d, struct reply *r)
{
    const char *rpc = NULL;
    const char *http = NULL;
    uint64_t leader = d->adapter ? adapterLeader(d->adapter, NULL) : 0;

    if (leader == 0 || leader == d->cfg.node_id) {
        r->resp.status = TN__STATUS__NO_QUORUM;
        r->resp.message = "no leader";
        return;
    }
    r->resp.leader_id = leader;
    if (fsmMemberGet(d->fsm, leader, &rpc, &http)) {
        r->resp.leader_rpc = arenaStrdup(&r->arena, rpc);
        r->resp.leader_http = arenaStrdup(&r->arena, http);
    }
}

static void completeStatus(struct dispatch *d,
                           struct dispatch_req *req,
                           int status,
                           const char *message)
{
    struct reply *r = replyNew();
    if (r == NULL) {
        /* Out of memory: deliver through a static reply. */
        req->priv = NULL;
        req->state = REQ_DONE;
        tn_queue_insert_tail(&d->done, &req->queue);
        scheduleIdle(d);
        return;
    }
    r->resp.id = req->request->id;
    r->resp.status = status;
    if (message != NULL) {
        r->resp.message = arenaStrdup(&r->arena, message);
    }
    if (status == TN__STATUS__NOT_LEADER) {
        replyLeaderHint(d, r);
    }
    complete(d, req, r);
}

static void deliverDone(struct dispatch *d)
{
    while (!tn_queue_empty(&d->done)) {
        tn_queue *q = tn_queue_head(&d->done);
        struct dispatch_req *req = TN_QUEUE_DATA(q, struct dispatch_req, queue);
        struct reply *r = req->priv;
        static Tn__Response oom = TN__RESPONSE__INIT;
        bool more;
        tn_queue_remove(q);
        req->priv = NULL;
        more = req->stream && r != NULL && r->unpacked == NULL && r->resp.more;
        if (req->stream && !more) {
            req->stream = false; /* the stream's final answer */
            d->n_streams--;
        }
        if (!more) {
            d->completed++;
        }
        if (r == NULL) {
            oom.id = req->request->id;
            oom.status = TN__STATUS__INTERNAL;
            oom.message = "out of memory";
            req->cb(req, &oom);
            continue;
        }
        req->cb(req, r->unpacked ? r->unpacked : &r->resp);
        replyFree(r);
        if (more) {
            streamRearm(d, req);
        }
    }
}

/* ---------------------------------------------------- result → response */

static int64_t expiresIn(struct dispatch *d, uint64_t session)
{
    struct lease *l;
    uint64_t now;
    if (!d->is_leader || !d->ready) {
        return -1;
    }
    l = leasesGet(&d->leases, session);
    if (l == NULL || l->expiring) {
        return 0;
    }
    now = monoMs();
    return l->deadline_ms > now ? (int64_t)(l->deadline_ms - now) : 0;
}

static Tn__LockInfo *lockInfoFromResult(struct dispatch *d,
                                        struct reply *r,
                                        const char *resource,
                                        const struct fsm_result *res)
{
    Tn__LockInfo *li = tnArenaAlloc(&r->arena, sizeof *li);
    if (li == NULL) {
        return NULL;
    }
    tn__lock_info__init(li);
    li->resource = arenaStrdup(&r->arena, resource);
    li->mode = res->mode;
    li->token = res->token;
    li->generation = res->generation;
    li->ttl_ms = res->ttl_ms;
    li->session = res->session;
    li->replayed = res->replayed;
    li->queue_len = res->queue_len;
    li->lock_delay_until_ms = res->lock_delay_until_ms;
    if (res->holder_session != 0) {
        Tn__Holder *h = tnArenaAlloc(&r->arena, sizeof *h);
        Tn__Holder **hs = tnArenaAlloc(&r->arena, sizeof *hs);
        if (h != NULL && hs != NULL) {
            tn__holder__init(h);
            h->session = res->holder_session;
            h->holder = arenaStrdup(&r->arena, res->holder);
            h->token = res->holder_token;
            h->acquired_at_ms = res->acquired_at_ms;
            h->ttl_ms = res->holder_ttl_ms;
            h->expires_in_ms = expiresIn(d, res->holder_session);
            hs[0] = h;
            li->holders = hs;
            li->n_holders = 1;
        }
    }
    return li;
}

static const char *requestResource(const Tn__Request *rq)
{
    switch (rq->body_case) {
        case TN__REQUEST__BODY_ACQUIRE:
            return rq->acquire->resource;
        case TN__REQUEST__BODY_RELEASE:
            return rq->release->resource;
        case TN__REQUEST__BODY_RENEW:
            return rq->renew->resource;
        default:
            return NULL;
    }
}

static void completeResult(struct dispatch *d,
                           struct dispatch_req *req,
                           uint64_t index,
                           const struct fsm_result *res)
{
    struct reply *r = replyNew();
    const Tn__Request *rq = req->request;
    const char *resource;
    double secs = (double)(monoNs() - req->started_ns) / 1e9;

    switch (rq->body_case) {
        case TN__REQUEST__BODY_ACQUIRE:
            metricsAcquire(&d->metrics, rq->acquire->resource, res->status,
                           secs, req->state == REQ_WAITING);
            if (d->is_leader && res->status == TN__STATUS__OK &&
                res->session != 0) {
                uint64_t deadline = monoMs() + res->ttl_ms;
                if (req->state == REQ_WAITING && rq->acquire->session == 0) {
                    /* The per-lock session's lease starts now. */
                    leasesRestart(&d->leases, res->session, res->epoch,
                                  res->ttl_ms, deadline);
                } else {
                    /* An acquire is a sign of life: the answer promises
                     * the session's full TTL from now. */
                    leasesExtend(&d->leases, res->session, res->epoch,
                                 res->ttl_ms, deadline);
                }
            }
            break;
        case TN__REQUEST__BODY_RELEASE: {
            double held = -1;
            uint64_t now = realMs();
            if (res->status == TN__STATUS__OK && !res->replayed &&
                res->acquired_at_ms > 0 && res->acquired_at_ms <= now) {
                held = (double)(now - res->acquired_at_ms) / 1e3;
            }
            metricsRelease(&d->metrics, rq->release->resource, res->status,
                           held);
            break;
        }
        case TN__REQUEST__BODY_RENEW:
            metricsRenew(&d->metrics, res->status);
            break;
        default:
            break;
    }
    if (res->status == TN__STATUS__LEASE_EXPIRED && res->late) {
        uint64_t now = realMs();
        tnWarnf("\"safety incident: request after the lease expired\" "
                "op=%s resource=\"%s\" token=%llu holder=\"%s\" "
                "session=%llu late_ms=%llu",
                rq->body_case == TN__REQUEST__BODY_RELEASE ? "release"
                                                           : "renew",
                requestResource(rq) ? requestResource(rq) : "",
                (unsigned long long)res->token,
                res->late_holder ? res->late_holder : "",
                (unsigned long long)res->session,
                (unsigned long long)(now > res->ended_at_ms
                                         ? now - res->ended_at_ms
                                         : 0));
    }

    if (r == NULL) {
        completeStatus(d, req, TN__STATUS__INTERNAL, "out of memory");
        return;
    }
    r->resp.id = rq->id;
    r->resp.status = res->status;
    r->resp.index = index;
    if (res->message != NULL) {
        r->resp.message = arenaStrdup(&r->arena, res->message);
    }
    switch (rq->body_case) {
        case TN__REQUEST__BODY_SESSION_OPEN:
        case TN__REQUEST__BODY_SESSION_CLOSE:
        case TN__REQUEST__BODY_KEEPALIVE: {
            Tn__SessionInfo *si = tnArenaAlloc(&r->arena, sizeof *si);
            if (si != NULL) {
                tn__session_info__init(si);
                si->session = res->session;
                si->epoch = res->epoch;
                si->ttl_ms = res->ttl_ms;
                if (rq->body_case == TN__REQUEST__BODY_SESSION_OPEN) {
                    si->holder = arenaStrdup(&r->arena,
                                             rq->session_open->holder);
                }
                r->resp.body_case = TN__RESPONSE__BODY_SESSION;
                r->resp.session = si;
            }
            break;
        }
        default:
            resource = requestResource(rq);
            if (resource != NULL) {
                Tn__LockInfo *li = lockInfoFromResult(d, r, resource, res);
                if (li != NULL && rq->body_case == TN__REQUEST__BODY_ACQUIRE &&
                    rq->acquire->mode == TN__LOCK_MODE__SEMAPHORE) {
                    li->permits = rq->acquire->permits;
                }
                if (li != NULL) {
                    r->resp.body_case = TN__RESPONSE__BODY_LOCK;
                    r->resp.lock = li;
                }
            }
            break;
    }
    complete(d, req, r);
}

/* ------------------------------------------------------------- batching */

static struct batch *batchNew(struct dispatch *d)
{
    struct batch *b = calloc(1, sizeof *b);
    if (b == NULL) {
        return NULL;
    }
    b->d = d;
    tn_queue_init(&b->queue);
    tn__batch__init(&b->msg);
    b->nonce = d->boot_nonce + d->next_nonce++;
    return b;
}

static void batchFree(struct batch *b)
{
    free(b->cmds);
    free(b->reqs);
    tnArenaFree(&b->arena);
    free(b);
}

/* Parked commands: an acquire that can only join a queue (the lock is held
 * by another session, or others wait already) changes nothing but the
 * queue, so it need not be an entry of its own. It waits in d->parked
 * until the next command that is proposed anyway, and rides in that
 * command's batch, ahead of it; or until the next timer tick (10 ms).
 * Every command that can free the lock (release, close, expiry, tick)
 * goes through batchAdd and takes the parked ones along, and an entry that
 * was already in flight and freed the lock unparks them when it is applied
 * (unparkIfFreed), so a parked acquire waits alone only while nothing else
 * happens, when it would wait in the queue anyway. Under contention this
 * saves the followers one disk write per hand-off: the releaser's next
 * acquire no longer becomes an entry written just before the next
 * release. */
static void batchUnpark(struct dispatch *d)
{
    struct batch *p = d->parked;
    if (p == NULL) {
        return;
    }
    d->parked = NULL;
    if (d->open != NULL && d->open->n > 0) {
        /* Not reached (parking joins a non-empty open batch instead). */
        tn_queue_insert_tail(&d->full, &d->open->queue);
    } else if (d->open != NULL) {
        batchFree(d->open);
    }
    d->open = p;
    scheduleIdle(d);
}

/* Append a command to the open batch, or to the parked one if @park and no
 * batch is about to be proposed. Returns the command (to fill), or NULL
 * when out of memory. */
static Tn__Command *batchAdd(struct dispatch *d,
                             struct dispatch_req *req,
                             bool park)
{
    struct batch *b;
    Tn__Command *cmd;

    if (park && (d->open == NULL || d->open->n == 0) &&
        (d->parked == NULL || d->parked->n < d->cfg.max_batch)) {
        if (d->parked == NULL && (d->parked = batchNew(d)) == NULL) {
            return NULL;
        }
        b = d->parked;
    } else {
        batchUnpark(d);
        b = d->open;
    }
    if (b != NULL && b != d->parked && b->n >= d->cfg.max_batch) {
        tn_queue_insert_tail(&d->full, &b->queue);
        d->open = b = NULL;
    }
    if (b == NULL) {
        b = d->open = batchNew(d);
        if (b == NULL) {
            return NULL;
        }
    }
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        Tn__Command **cmds = realloc(b->cmds, cap * sizeof *cmds);
        struct dispatch_req **reqs;
        if (cmds == NULL) {
            return NULL;
        }
        b->cmds = cmds;
        reqs = realloc(b->reqs, cap * sizeof *reqs);
        if (reqs == NULL) {
            return NULL;
        }
        b->reqs = reqs;
        b->cap = cap;
    }
    cmd = tnArenaAlloc(&b->arena, sizeof *cmd);
    if (cmd == NULL) {
        return NULL;
    }
    tn__command__init(cmd);
    b->cmds[b->n] = cmd;
    b->reqs[b->n] = req;
    b->n++;
    if (req != NULL) {
        req->state = REQ_BATCHED;
    }
    if (b != d->parked) {
        scheduleIdle(d);
    } else {
        d->stats.parked++;
    }
    return cmd;
}

static void proposeCb(struct adapter_propose *prop, int status);

static uint64_t clusterNow(struct dispatch *d)
{
    uint64_t now = realMs();
    if (now < d->last_stamp) {
        now = d->last_stamp;
    }
    if (now < fsmNow(d->fsm)) {
        now = fsmNow(d->fsm);
    }
    d->last_stamp = now;
    return now;
}

static void batchFail(struct dispatch *d, struct batch *b, int status)
{
    uint64_t now = monoMs();
    for (size_t i = 0; i < b->n; i++) {
        struct dispatch_req *req = b->reqs[i];
        Tn__Command *cmd = b->cmds[i];
        if (req != NULL) {
            completeStatus(d, req, status,
                           status == TN__STATUS__COMMIT_UNKNOWN
                               ? "leader lost before the outcome was known; "
                                 "retry with the same client_id and seq"
                               : NULL);
            continue;
        }
        if (cmd->body_case == TN__COMMAND__BODY_SESSION_EXPIRE) {
            struct lease *l =
                leasesGet(&d->leases, cmd->session_expire->session);
            if (l != NULL && l->expiring) {
                leasesUnsetExpiring(&d->leases, l, now + 50);
            }
        } else if (cmd->body_case == TN__COMMAND__BODY_TICK) {
            d->tick_busy = false;
        }
    }
}

/* Propose @b; returns false if it must wait (no slot). */
static bool batchPropose(struct dispatch *d, struct batch *b)
{
    int rv;

    if (d->outstanding >= d->cfg.max_outstanding) {
        return false;
    }
    b->msg.version = 1;
    b->msg.term = adapterTerm(d->adapter);
    b->msg.now_ms = clusterNow(d);
    b->msg.proposer = d->cfg.node_id;
    b->msg.nonce = b->nonce;
    b->msg.n_commands = b->n;
    b->msg.commands = b->cmds;
    b->prop.data = b;
    b->sent_ms = monoMs();
    rv = adapterPropose(d->adapter, &b->prop, &b->msg, proposeCb);
    if (rv != 0) {
        batchFail(d, b, rv);
        batchFree(b);
        return true;
    }
    d->outstanding++;
    d->stats.batches++;
    d->stats.commands += b->n;
    tn_queue_insert_tail(&d->proposed, &b->queue);
    return true;
}

static void flushBatches(struct dispatch *d)
{
    while (!tn_queue_empty(&d->full)) {
        tn_queue *q = tn_queue_head(&d->full);
        struct batch *b = TN_QUEUE_DATA(q, struct batch, queue);
        if (d->outstanding >= d->cfg.max_outstanding) {
            return;
        }
        tn_queue_remove(q);
        batchPropose(d, b);
    }
    if (d->open != NULL && d->open->n > 0 &&
        d->outstanding < d->cfg.max_outstanding) {
        struct batch *b = d->open;
        d->open = NULL;
        batchPropose(d, b);
    }
}

static bool acquireOnlyQueues(struct dispatch *d, const Tn__Request *rq);

/* The entry just applied may have freed a lock a parked acquire waits for
 * (its release was in flight when the acquire arrived): then the parked
 * batch goes now, not at the next tick. */
static void unparkIfFreed(struct dispatch *d)
{
    struct batch *p = d->parked;
    if (p == NULL) {
        return;
    }
    for (size_t i = 0; i < p->n; i++) {
        if (p->reqs[i] != NULL &&
            !acquireOnlyQueues(d, p->reqs[i]->request)) {
            batchUnpark(d);
            return;
        }
    }
}

static void proposeCb(struct adapter_propose *prop, int status)
{
    struct batch *b = prop->data;
    struct dispatch *d = b->d;

    tn_queue_remove(&b->queue);
    d->outstanding--;
    if (status == 0 && !b->applied) {
        /* Committed but not applied here: the entry could not be decoded
         * (every replica skipped it). Its requests did nothing. */
        tnErrorf("\"a committed entry was not applied\" commands=%zu", b->n);
        status = TN__STATUS__INTERNAL;
    }
    if (status != 0 && !b->applied) {
        batchFail(d, b, status);
    }
    batchFree(b);
    if (!d->closing) {
        unparkIfFreed(d);
        flushBatches(d);
    }
}

/* ------------------------------------------------------------ apply hook */

static void appliedHook(void *data,
                        uint64_t index,
                        const Tn__Batch *msg,
                        const struct fsm_result *results)
{
    struct dispatch *d = data;
    struct batch *b = NULL;
    tn_queue *q;

    if (msg->proposer != d->cfg.node_id) {
        return;
    }
    TN_QUEUE_FOREACH(q, &d->proposed)
    {
        struct batch *p = TN_QUEUE_DATA(q, struct batch, queue);
        if (p->nonce == msg->nonce) {
            b = p;
            break;
        }
    }
    if (b == NULL || b->n != msg->n_commands) {
        return;
    }
    b->applied = true;
    if (d->is_leader && b->sent_ms > d->quorum_ms) {
        d->quorum_ms = b->sent_ms; /* a majority stored what we sent then */
    }
    for (size_t i = 0; i < b->n; i++) {
        struct dispatch_req *req = b->reqs[i];
        const Tn__Command *cmd = b->cmds[i];
        if (req == NULL) {
            if (cmd->body_case == TN__COMMAND__BODY_TICK) {
                d->tick_busy = false;
            }
            continue;
        }
        if (results[i].queued) {
            const Tn__Acquire *acq = req->request->acquire;
            req->wait_session = results[i].session;
            if (d->is_leader && acq != NULL && acq->session == 0) {
                /* A per-lock session's lease starts at its grant: keep it
                 * alive while it waits in the queue. */
                leasesExtend(&d->leases, results[i].session, results[i].epoch,
                             results[i].ttl_ms,
                             monoMs() + acq->wait_ms + results[i].ttl_ms);
            }
            req->state = REQ_WAITING;
            tn_queue_insert_tail(&d->waiters, &req->queue);
            if (req->cancel) {
                dispatchCancel(d, req);
            }
            continue;
        }
        completeResult(d, req, index, &results[i]);
    }
}

/* What the watch @req (long-poll or stream) watches: a resource, or a
 * prefix, and the index after which a change counts (a stream: the index
 * of its last event). */
static const char *watchTarget(const struct dispatch_req *req,
                               uint64_t *after,
                               bool *prefix)
{
    const Tn__Request *rq = req->request;
    const char *key;

    switch (rq->body_case) {
        case TN__REQUEST__BODY_GET_LOCK:
            key = rq->get_lock->resource;
            *after = rq->get_lock->index;
            *prefix = false;
            break;
        case TN__REQUEST__BODY_LIST_LOCKS:
            key = rq->list_locks->prefix;
            *after = rq->list_locks->index;
            *prefix = true;
            break;
        default:
            key = rq->watch->resource;
            *after = req->watch_index;
            *prefix = rq->watch->prefix;
            break;
    }
    return key != NULL ? key : "";
}

/* Does a change of @resource at @index concern the watch @req? */
static bool watchHit(const struct dispatch_req *req,
                     const char *resource,
                     size_t len,
                     uint64_t index)
{
    uint64_t after;
    bool prefix;
    const char *w = watchTarget(req, &after, &prefix);
    size_t wn = strlen(w);

    if (index <= after) {
        return false;
    }
    return prefix ? wn <= len && memcmp(w, resource, wn) == 0
                  : wn == len && memcmp(w, resource, len) == 0;
}

/* Move the watches (long-polls and streams) that @resource's change at
 * @index concerns to the fired list; they are answered at the next idle,
 * once the entry is fully applied. */
static void watchesNotify(struct dispatch *d,
                          const char *resource,
                          size_t len,
                          uint64_t index)
{
    tn_queue *heads[2] = { &d->watches, &d->streams };
    for (int i = 0; i < 2; i++) {
        tn_queue *q = tn_queue_head(heads[i]);
        while (q != heads[i]) {
            struct dispatch_req *req =
                TN_QUEUE_DATA(q, struct dispatch_req, queue);
            q = q->next;
            if (!watchHit(req, resource, len, index)) {
                continue;
            }
            tn_queue_remove(&req->queue);
            if (req->state == REQ_WATCH) {
                d->n_watches--;
            }
            req->state = REQ_READ;
            tn_queue_insert_tail(&d->fired, &req->queue);
            scheduleIdle(d);
        }
    }
}

static void eventHook(void *data, const struct fsm_event *e)
{
    struct dispatch *d = data;
    tn_queue *q;

    switch (e->type) {
        case FSM_EVENT_SESSION_OPEN:
        case FSM_EVENT_SESSION_RENEW:
            if (d->is_leader) {
                if (leasesExtend(&d->leases, e->session, e->epoch, e->ttl_ms,
                                 monoMs() + e->ttl_ms) != 0) {
                    tnErrorf("\"out of memory tracking a lease\" session=%llu",
                             (unsigned long long)e->session);
                }
            }
            break;
        case FSM_EVENT_SESSION_END:
            leasesRemove(&d->leases, e->session);
            break;
        case FSM_EVENT_WAIT_DONE:
            TN_QUEUE_FOREACH(q, &d->waiters)
            {
                struct dispatch_req *req =
                    TN_QUEUE_DATA(q, struct dispatch_req, queue);
                if (req->client_id == e->client_id && req->seq == e->seq) {
                    tn_queue_remove(&req->queue);
                    completeResult(d, req, e->index, e->result);
                    break;
                }
            }
            break;
        case FSM_EVENT_LOCK_CHANGE: {
            uint64_t h = resourceHash(e->resource, e->resource_len);
            size_t slot = (size_t)(h & (CHANGED_SLOTS - 1));
            d->changed[slot] = e->index;
            if (d->n_watches > 0 || !tn_queue_empty(&d->streams)) {
                watchesNotify(d, e->resource, e->resource_len, e->index);
            }
            break;
        }
        default:
            break;
    }
}

/* --------------------------------------------------------------- reads */

struct lockCollect
{
    struct dispatch *d;
    struct reply *r;
    Tn__LockInfo **locks;
    size_t n;
    size_t cap;
    size_t limit;
};

static Tn__LockInfo *lockInfoFromView(struct dispatch *d,
                                      struct reply *r,
                                      const struct fsm_lock_view *v)
{
    Tn__LockInfo *li = tnArenaAlloc(&r->arena, sizeof *li);
    if (li == NULL) {
        return NULL;
    }
    tn__lock_info__init(li);
    li->resource = tnArenaStrndup(&r->arena, v->resource, v->resource_len);
    li->mode = v->mode;
    li->generation = v->generation;
    li->permits = v->permits;
    li->queue_len = v->queue_len;
    li->lock_delay_until_ms = v->lock_delay_until_ms;
    if (v->n_holders > 0) {
        li->holders = tnArenaAlloc(&r->arena, v->n_holders * sizeof *li->holders);
        if (li->holders == NULL) {
            return NULL;
        }
        for (uint32_t i = 0; i < v->n_holders; i++) {
            Tn__Holder *h = tnArenaAlloc(&r->arena, sizeof *h);
            if (h == NULL) {
                return NULL;
            }
            tn__holder__init(h);
            h->session = v->holders[i].session;
            h->holder = arenaStrdup(&r->arena, v->holders[i].holder);
            h->token = v->holders[i].token;
            h->acquired_at_ms = v->holders[i].acquired_at_ms;
            h->ttl_ms = v->holders[i].ttl_ms;
            h->expires_in_ms = expiresIn(d, h->session);
            li->holders[i] = h;
        }
        li->n_holders = v->n_holders;
        li->token = v->holders[0].token;
        li->session = v->holders[0].session;
        li->ttl_ms = v->holders[0].ttl_ms;
    }
    return li;
}

static int lockCollectCb(void *data, const struct fsm_lock_view *v)
{
    struct lockCollect *c = data;
    Tn__LockInfo *li;
    if (c->n >= c->limit) {
        return 1;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        Tn__LockInfo **locks = tnArenaAlloc(&c->r->arena, cap * sizeof *locks);
        if (locks == NULL) {
            return 1;
        }
        if (c->n > 0) {
            memcpy(locks, c->locks, c->n * sizeof *locks);
        }
        c->locks = locks;
        c->cap = cap;
    }
    li = lockInfoFromView(c->d, c->r, v);
    if (li == NULL) {
        return 1;
    }
    c->locks[c->n++] = li;
    return 0;
}

static void answerRead(struct dispatch *d, struct dispatch_req *req)
{
    const Tn__Request *rq = req->request;
    struct reply *r = replyNew();

    if (r == NULL) {
        completeStatus(d, req, TN__STATUS__INTERNAL, "out of memory");
        return;
    }
    r->resp.id = rq->id;
    r->resp.index = fsmIndex(d->fsm);
    if (rq->body_case == TN__REQUEST__BODY_SNAPSHOT_SAVE) {
        void *buf;
        size_t len;
        if (fsmSnapshot(d->fsm, &buf, &len) != 0) {
            replyFree(r);
            completeStatus(d, req, TN__STATUS__INTERNAL, "out of memory");
            return;
        }
        r->resp.snapshot.data = tnArenaAlloc(&r->arena, len ? len : 1);
        if (r->resp.snapshot.data == NULL) {
            free(buf);
            replyFree(r);
            completeStatus(d, req, TN__STATUS__INTERNAL, "out of memory");
            return;
        }
        memcpy(r->resp.snapshot.data, buf, len);
        free(buf);
        r->resp.snapshot.len = len;
        r->resp.body_case = TN__RESPONSE__BODY_SNAPSHOT;
        tnInfof("\"snapshot saved for an operator\" index=%llu bytes=%zu",
                (unsigned long long)r->resp.index, len);
    } else if (rq->body_case == TN__REQUEST__BODY_GET_LOCK ||
               (rq->body_case == TN__REQUEST__BODY_WATCH &&
                !rq->watch->prefix)) {
        struct fsm_lock_view v;
        const char *res = rq->body_case == TN__REQUEST__BODY_GET_LOCK
                              ? rq->get_lock->resource
                              : rq->watch->resource;
        Tn__LockInfo *li;
        res = res != NULL ? res : "";
        if (fsmLockGet(d->fsm, res, strlen(res), &v)) {
            li = lockInfoFromView(d, r, &v);
            r->resp.index = v.modified_index;
        } else {
            /* Forgotten (or never seen): the latest change in its slot of
             * the recent-changes table, at least its own last change, so
             * a watch that resumes from it misses nothing. */
            r->resp.index = changedSlotIndex(d, res, strlen(res));
            li = tnArenaAlloc(&r->arena, sizeof *li);
            if (li != NULL) {
                tn__lock_info__init(li);
                li->resource = arenaStrdup(&r->arena, res);
            }
        }
        if (li == NULL) {
            replyFree(r);
            completeStatus(d, req, TN__STATUS__INTERNAL, "out of memory");
            return;
        }
        r->resp.body_case = TN__RESPONSE__BODY_LOCK;
        r->resp.lock = li;
    } else {
        struct lockCollect c = { .d = d, .r = r };
        const char *prefix;
        uint32_t limit;
        Tn__LockList *ll = tnArenaAlloc(&r->arena, sizeof *ll);
        if (rq->body_case == TN__REQUEST__BODY_WATCH) {
            prefix = rq->watch->resource;
            limit = rq->watch->limit;
        } else {
            prefix = rq->list_locks->prefix;
            limit = rq->list_locks->limit;
        }
        prefix = prefix != NULL ? prefix : "";
        c.limit = limit ? limit : 1000;
        if (ll == NULL) {
            replyFree(r);
            completeStatus(d, req, TN__STATUS__INTERNAL, "out of memory");
            return;
        }
        fsmLockForEach(d->fsm, prefix, strlen(prefix), lockCollectCb, &c);
        tn__lock_list__init(ll);
        ll->locks = c.locks;
        ll->n_locks = c.n;
        r->resp.body_case = TN__RESPONSE__BODY_LIST;
        r->resp.list = ll;
    }
    if (rq->body_case == TN__REQUEST__BODY_WATCH) {
        /* A stream's event: everything applied so far is in it, so the
         * applied index is where the stream resumes. Never backwards. */
        r->resp.index = fsmIndex(d->fsm);
        if (r->resp.index < req->watch_index) {
            r->resp.index = req->watch_index;
        }
        req->watch_index = r->resp.index;
        r->resp.more = true;
    }
    complete(d, req, r);
}

static int prefixChangedCb(void *data, const struct fsm_lock_view *v)
{
    uint64_t *index = data;
    if (v->modified_index > *index) {
        *index = UINT64_MAX; /* found one */
        return 1;
    }
    return 0;
}

/* Has what @req watches changed after the index it names (a stream: the
 * index of its last event)? */
static bool changedSince(struct dispatch *d, const struct dispatch_req *req)
{
    uint64_t after;
    bool prefix;
    const char *key = watchTarget(req, &after, &prefix);
    size_t n = strlen(key);
    struct fsm_lock_view v;

    if (!prefix) {
        /* A freed resource is forgotten by the FSM and its slot in the
         * table of recent changes may have been taken by another one
         * since: the slot's latest change counts (a watch may wake early,
         * never late). */
        uint64_t mod = fsmLockGet(d->fsm, key, n, &v)
                           ? v.modified_index
                           : changedSlotIndex(d, key, n);
        return mod > after;
    }
    if (req->request->body_case == TN__REQUEST__BODY_WATCH) {
        /* A stream must never miss its latest state, so it errs towards
         * "changed" (an extra event repeats the state, which is harmless):
         * a prefix cannot tell which forgotten resources it covered, so
         * anything applied after @after counts. */
        return fsmIndex(d->fsm) > after;
    } else {
        uint64_t index = after;
        fsmLockForEach(d->fsm, key, n, prefixChangedCb, &index);
        return index == UINT64_MAX;
    }
}

/* Park a stream until the next change of what it watches, or until its
 * next progress event is due. Every stream is parked at the tail with the
 * same interval, so `streams` stays in deadline order. */
static void streamPark(struct dispatch *d, struct dispatch_req *req)
{
    req->state = REQ_STREAM;
    req->deadline_ms = monoMs() + d->cfg.watch_progress_ms;
    tn_queue_insert_tail(&d->streams, &req->queue);
}

/* Start a stream (after its barrier when linearizable): the first event
 * at once when @index is 0 or something changed after it. */
static void streamStart(struct dispatch *d, struct dispatch_req *req)
{
    if (d->closing) {
        completeStatus(d, req, TN__STATUS__CANCELED, "node shutting down");
    } else if (req->watch_index == 0 || changedSince(d, req)) {
        answerRead(d, req);
    } else {
        streamPark(d, req);
    }
}

/* A stream's event was delivered: park it again at the event's index, or
 * end it. */
static void streamRearm(struct dispatch *d, struct dispatch_req *req)
{
    if (d->closing) {
        completeStatus(d, req, TN__STATUS__CANCELED, "node shutting down");
    } else if (req->cancel) {
        completeStatus(d, req, TN__STATUS__CANCELED, "canceled");
    } else if (!req->request->watch->stale && !d->is_leader) {
        completeStatus(d, req, TN__STATUS__NOT_LEADER, "not the leader");
    } else if (fsmIndex(d->fsm) > req->watch_index && changedSince(d, req)) {
        req->state = REQ_READ;
        tn_queue_insert_tail(&d->fired, &req->queue);
        scheduleIdle(d);
    } else {
        streamPark(d, req);
    }
}

/* Answer a read now, or park it as a watch (long-poll) when it names an
 * index and a wait and nothing changed since that index. */
static void answerOrWatch(struct dispatch *d, struct dispatch_req *req)
{
    const Tn__Request *rq = req->request;
    uint64_t index;
    uint32_t wait;

    if (rq->body_case == TN__REQUEST__BODY_GET_LOCK) {
        index = rq->get_lock->index;
        wait = rq->get_lock->wait_ms;
    } else if (rq->body_case == TN__REQUEST__BODY_LIST_LOCKS) {
        index = rq->list_locks->index;
        wait = rq->list_locks->wait_ms;
    } else if (rq->body_case == TN__REQUEST__BODY_WATCH) {
        streamStart(d, req);
        return;
    } else {
        answerRead(d, req);
        return;
    }
    if (index == 0 || wait == 0 || d->closing ||
        d->n_watches >= MAX_WATCHES || changedSince(d, req)) {
        answerRead(d, req);
        return;
    }
    if (wait > 600000) {
        wait = 600000;
    }
    req->state = REQ_WATCH;
    req->deadline_ms = monoMs() + wait;
    tn_queue_insert_tail(&d->watches, &req->queue);
    d->n_watches++;
}

static void answerFired(struct dispatch *d)
{
    while (!tn_queue_empty(&d->fired)) {
        tn_queue *q = tn_queue_head(&d->fired);
        struct dispatch_req *req = TN_QUEUE_DATA(q, struct dispatch_req, queue);
        tn_queue_remove(q);
        answerRead(d, req);
    }
}

static void readBarrierCb(struct adapter_propose *prop, int status);

static void startReadBarrier(struct dispatch *d)
{
    int rv;
    if (d->read_barrier_busy || tn_queue_empty(&d->reads) || !d->is_leader) {
        return;
    }
    while (!tn_queue_empty(&d->reads)) {
        tn_queue *q = tn_queue_head(&d->reads);
        tn_queue_remove(q);
        tn_queue_insert_tail(&d->reads_inflight, q);
    }
    d->read_barrier.data = d;
    rv = adapterBarrier(d->adapter, &d->read_barrier, readBarrierCb);
    if (rv != 0) {
        readBarrierCb(&d->read_barrier, rv);
        return;
    }
    d->read_barrier_busy = true;
}

static void readBarrierCb(struct adapter_propose *prop, int status)
{
    struct dispatch *d = prop->data;
    d->read_barrier_busy = false;
    while (!tn_queue_empty(&d->reads_inflight)) {
        tn_queue *q = tn_queue_head(&d->reads_inflight);
        struct dispatch_req *req = TN_QUEUE_DATA(q, struct dispatch_req, queue);
        tn_queue_remove(q);
        if (status == 0) {
            answerOrWatch(d, req);
        } else {
            completeStatus(d, req,
                           status == TN__STATUS__COMMIT_UNKNOWN
                               ? TN__STATUS__NOT_LEADER
                               : status,
                           NULL);
        }
    }
    if (!d->closing) {
        startReadBarrier(d);
    }
}

static void answerCluster(struct dispatch *d, struct dispatch_req *req)
{
    struct reply *r = replyNew();
    struct adapter_member members[16];
    Tn__ClusterInfo *ci;
    const char *rpc;
    const char *http;
    unsigned n;
    uint64_t leader;
    static const char *const roles[] = { "unavailable", "follower",
                                         "candidate", "leader" };

    if (r == NULL) {
        completeStatus(d, req, TN__STATUS__INTERNAL, "out of memory");
        return;
    }
    r->resp.id = req->request->id;
    ci = tnArenaAlloc(&r->arena, sizeof *ci);
    if (ci == NULL) {
        replyFree(r);
        completeStatus(d, req, TN__STATUS__INTERNAL, "out of memory");
        return;
    }
    tn__cluster_info__init(ci);
    leader = adapterLeader(d->adapter, NULL);
    ci->leader_id = leader;
    if (leader != 0 && fsmMemberGet(d->fsm, leader, &rpc, &http)) {
        ci->leader_rpc = arenaStrdup(&r->arena, rpc);
        ci->leader_http = arenaStrdup(&r->arena, http);
    } else if (leader == d->cfg.node_id) {
        ci->leader_rpc = arenaStrdup(&r->arena, d->cfg.rpc_address);
        ci->leader_http = arenaStrdup(&r->arena, d->cfg.http_address);
    }
    ci->term = adapterTerm(d->adapter);
    ci->commit_index = adapterCommitIndex(d->adapter);
    ci->applied_index = adapterAppliedIndex(d->adapter);
    ci->node_id = d->cfg.node_id;
    ci->state = (char *)roles[adapterRole(d->adapter)];
    n = adapterMembers(d->adapter, members, 16);
    if (n > 16) {
        n = 16;
    }
    ci->members = tnArenaAlloc(&r->arena, (n ? n : 1) * sizeof *ci->members);
    if (ci->members != NULL) {
        for (unsigned i = 0; i < n; i++) {
            Tn__Member *m = tnArenaAlloc(&r->arena, sizeof *m);
            if (m == NULL) {
                break;
            }
            tn__member__init(m);
            m->id = members[i].id;
            m->raft_address = arenaStrdup(&r->arena, members[i].address);
            m->role = (char *)members[i].role;
            if (fsmMemberGet(d->fsm, m->id, &rpc, &http)) {
                m->rpc_address = arenaStrdup(&r->arena, rpc);
                m->http_address = arenaStrdup(&r->arena, http);
            } else if (m->id == d->cfg.node_id) {
                m->rpc_address = arenaStrdup(&r->arena, d->cfg.rpc_address);
                m->http_address = arenaStrdup(&r->arena, d->cfg.http_address);
            }
            ci->members[ci->n_members++] = m;
        }
    }
    r->resp.body_case = TN__RESPONSE__BODY_CLUSTER;
    r->resp.cluster = ci;
    complete(d, req, r);
}

/* ------------------------------------------------------------ keepalive */

static void answerKeepalive(struct dispatch *d, struct dispatch_req *req)
{
    uint64_t id = req->request->keepalive->session;
    struct fsm_session_view s;
    struct lease *l;
    struct fsm_result res;

    if (!fsmSessionGet(d->fsm, id, &s)) {
        metricsKeepalive(&d->metrics, TN__STATUS__SESSION_EXPIRED);
        completeStatus(d, req, TN__STATUS__SESSION_EXPIRED,
                       "session expired or unknown");
        return;
    }
    l = leasesGet(&d->leases, id);
    if (l != NULL && l->expiring) {
        metricsKeepalive(&d->metrics, TN__STATUS__SESSION_EXPIRED);
        completeStatus(d, req, TN__STATUS__SESSION_EXPIRED,
                       "session expired");
        return;
    }
    if (leasesExtend(&d->leases, id, s.epoch, s.ttl_ms,
                     monoMs() + s.ttl_ms) != 0) {
        completeStatus(d, req, TN__STATUS__INTERNAL, "out of memory");
        return;
    }
    d->stats.keepalives++;
    metricsKeepalive(&d->metrics, TN__STATUS__OK);
    memset(&res, 0, sizeof res);
    res.status = TN__STATUS__OK;
    res.session = id;
    res.epoch = s.epoch;
    res.ttl_ms = s.ttl_ms;
    completeResult(d, req, fsmIndex(d->fsm), &res);
}

/* ----------------------------------------------------------- forwarding */

struct fwdState
{
    struct forward_req fr;
    struct dispatch_req *req;
};

static void forwardCb(struct forward_req *fr, int status,
                      const Tn__Response *response)
{
    struct fwdState *st = fr->data;
    struct dispatch_req *req = st->req;
    struct dispatch *d = req->d;
    free(st);

    if (response == NULL) {
        completeStatus(d, req, status, "relay to the leader failed");
        return;
    }
    /* Re-pack into a reply we own: the forwarder frees `response`. */
    {
        struct reply *r = replyNew();
        size_t n = protobuf_c_message_get_packed_size(&response->base);
        uint8_t *buf = malloc(n ? n : 1);
        if (r == NULL || buf == NULL) {
            free(buf);
            if (r != NULL) {
                replyFree(r);
            }
            completeStatus(d, req, TN__STATUS__INTERNAL, "out of memory");
            return;
        }
        protobuf_c_message_pack(&response->base, buf);
        r->unpacked = tn__response__unpack(NULL, n, buf);
        free(buf);
        if (r->unpacked == NULL) {
            replyFree(r);
            completeStatus(d, req, TN__STATUS__INTERNAL, "bad relay reply");
            return;
        }
        r->unpacked->id = req->request->id;
        r->unpacked->more = false; /* relayed answers are final */
        complete(d, req, r);
    }
}

/* Relay to the leader, or answer NOT_LEADER. */
static void notLeader(struct dispatch *d, struct dispatch_req *req)
{
    uint64_t leader = adapterLeader(d->adapter, NULL);
    const char *rpc = NULL;
    const char *http = NULL;
    struct fwdState *st;
    int rv;

    if (!req->request->forward ||
        req->request->body_case == TN__REQUEST__BODY_WATCH || leader == 0 ||
        leader == d->cfg.node_id ||
        !fsmMemberGet(d->fsm, leader, &rpc, &http) || rpc == NULL ||
        rpc[0] == '\0') {
        completeStatus(d, req, TN__STATUS__NOT_LEADER, "not the leader");
        return;
    }
    st = calloc(1, sizeof *st);
    if (st == NULL) {
        completeStatus(d, req, TN__STATUS__INTERNAL, "out of memory");
        return;
    }
    st->req = req;
    st->fr.data = st;
    req->state = REQ_FORWARDED;
    req->client_id = req->request->client_id;
    req->seq = req->request->seq;
    if (req->request->body_case == TN__REQUEST__BODY_ACQUIRE &&
        req->request->client_id == 0 && req->request->acquire->wait_ms > 0) {
        /* So that the waiter can be withdrawn by name if the requester
         * leaves while it waits. */
        Tn__Request copy = *req->request;
        req->client_id = d->self_client_id;
        req->seq = ++d->self_seq;
        copy.client_id = req->client_id;
        copy.seq = req->seq;
        rv = forwarderSend(d->fwd, rpc, &copy, &st->fr, forwardCb);
    } else {
        rv = forwarderSend(d->fwd, rpc, req->request, &st->fr, forwardCb);
    }
    if (rv != 0) {
        free(st);
        completeStatus(d, req, rv, "relay to the leader failed");
        return;
    }
    d->stats.forwarded++;
}

/* --------------------------------------------------------------- submit */

static bool isMutation(int body_case)
{
    switch (body_case) {
        case TN__REQUEST__BODY_SESSION_OPEN:
        case TN__REQUEST__BODY_SESSION_CLOSE:
        case TN__REQUEST__BODY_ACQUIRE:
        case TN__REQUEST__BODY_RELEASE:
        case TN__REQUEST__BODY_RENEW:
        case TN__REQUEST__BODY_MEMBER_INFO:
        case TN__REQUEST__BODY_SNAPSHOT_RESTORE:
        case TN__REQUEST__BODY_WITHDRAW:
            return true;
        default:
            return false;
    }
}

static void process(struct dispatch *d, struct dispatch_req *req);

static void processNotReady(struct dispatch *d)
{
    while (!tn_queue_empty(&d->not_ready)) {
        tn_queue *q = tn_queue_head(&d->not_ready);
        struct dispatch_req *req = TN_QUEUE_DATA(q, struct dispatch_req, queue);
        tn_queue_remove(q);
        req->state = REQ_NEW;
        process(d, req);
    }
}

static void alarmRecord(struct dispatch *d, uint64_t id, uint64_t free_bytes)
{
    uint64_t now = monoMs();
    unsigned slot = 0;
    for (unsigned i = 0; i < 16; i++) {
        if (d->alarms[i].id == id || d->alarms[i].until_ms < now) {
            slot = i;
            if (d->alarms[i].id == id) {
                break;
            }
        }
    }
    d->alarms[slot].id = id;
    d->alarms[slot].until_ms = now + 3000;
    d->alarms[slot].free_bytes = free_bytes;
}

/* Is some member short of disk? Sets which one. */
static bool diskAlarm(struct dispatch *d, uint64_t *id, uint64_t *free_bytes)
{
    uint64_t now = monoMs();
    if (d->disk_low) {
        *id = d->cfg.node_id;
        *free_bytes = d->disk_free;
        return true;
    }
    for (unsigned i = 0; i < 16; i++) {
        if (d->alarms[i].id != 0 && d->alarms[i].until_ms >= now) {
            *id = d->alarms[i].id;
            *free_bytes = d->alarms[i].free_bytes;
            return true;
        }
    }
    return false;
}

/* Whether @rq is a queued acquire that, as things stand on this leader,
 * would only join the lock's queue (see batchUnpark). A guess: the entry's
 * apply decides, and a wrong guess only delays or hastens the proposal. */
static bool acquireOnlyQueues(struct dispatch *d, const Tn__Request *rq)
{
    const Tn__Acquire *a = rq->acquire;
    struct fsm_lock_view v;

    if (rq->body_case != TN__REQUEST__BODY_ACQUIRE || a->wait_ms == 0 ||
        a->resource == NULL ||
        !fsmLockGet(d->fsm, a->resource, strlen(a->resource), &v)) {
        return false;
    }
    if (v.queue_len > 0) {
        return true;
    }
    if (v.n_holders == 0 || v.mode != TN__LOCK_MODE__EXCLUSIVE) {
        return false;
    }
    for (uint32_t i = 0; i < v.n_holders; i++) {
        if (v.holders[i].session == a->session) {
            return false;
        }
    }
    return true;
}

static void submitMutation(struct dispatch *d, struct dispatch_req *req)
{
    Tn__Request *rq = req->request;
    Tn__Command *cmd;

    if (rq->body_case == TN__REQUEST__BODY_MEMBER_INFO &&
        rq->member_info->low_disk) {
        /* A follower reporting a disk-space alarm: kept in memory. */
        alarmRecord(d, rq->member_info->id, rq->member_info->free_bytes);
        completeStatus(d, req, TN__STATUS__OK, NULL);
        return;
    }
    if (rq->body_case != TN__REQUEST__BODY_RELEASE &&
        rq->body_case != TN__REQUEST__BODY_SESSION_CLOSE &&
        rq->body_case != TN__REQUEST__BODY_WITHDRAW &&
        rq->body_case != TN__REQUEST__BODY_MEMBER_INFO) {
        uint64_t id;
        uint64_t free_bytes;
        if (diskAlarm(d, &id, &free_bytes)) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "writes refused: node %llu has %llu MiB free in its data "
                     "dir, below min-free-disk",
                     (unsigned long long)id,
                     (unsigned long long)(free_bytes >> 20));
            completeStatus(d, req, TN__STATUS__NO_SPACE, msg);
            return;
        }
    }
    req->client_id = rq->client_id;
    req->seq = rq->seq;
    if (rq->body_case == TN__REQUEST__BODY_ACQUIRE && rq->client_id == 0 &&
        rq->acquire->wait_ms > 0) {
        /* A queued acquire is matched to its grant by (client_id, seq). */
        req->client_id = d->self_client_id;
        req->seq = ++d->self_seq;
    }
    cmd = batchAdd(d, req, acquireOnlyQueues(d, rq));
    if (cmd == NULL) {
        completeStatus(d, req, TN__STATUS__INTERNAL, "out of memory");
        return;
    }
    cmd->client_id = req->client_id;
    cmd->seq = req->seq;
    /* The sub-messages are borrowed from the request, which lives until
     * its callback, which fires only after the batch is done with them. */
    switch (rq->body_case) {
        case TN__REQUEST__BODY_SESSION_OPEN:
            cmd->body_case = TN__COMMAND__BODY_SESSION_OPEN;
            cmd->session_open = rq->session_open;
            break;
        case TN__REQUEST__BODY_SESSION_CLOSE:
            cmd->body_case = TN__COMMAND__BODY_SESSION_CLOSE;
            cmd->session_close = rq->session_close;
            break;
        case TN__REQUEST__BODY_ACQUIRE:
            cmd->body_case = TN__COMMAND__BODY_ACQUIRE;
            cmd->acquire = rq->acquire;
            break;
        case TN__REQUEST__BODY_RELEASE:
            cmd->body_case = TN__COMMAND__BODY_RELEASE;
            cmd->release = rq->release;
            break;
        case TN__REQUEST__BODY_RENEW:
            cmd->body_case = TN__COMMAND__BODY_RENEW;
            cmd->renew = rq->renew;
            break;
        case TN__REQUEST__BODY_MEMBER_INFO:
            cmd->body_case = TN__COMMAND__BODY_MEMBER;
            cmd->member = rq->member_info;
            break;
        case TN__REQUEST__BODY_SNAPSHOT_RESTORE:
            cmd->body_case = TN__COMMAND__BODY_RESTORE;
            cmd->restore = rq->snapshot_restore;
            break;
        case TN__REQUEST__BODY_WITHDRAW:
            cmd->body_case = TN__COMMAND__BODY_WITHDRAW;
            cmd->withdraw = rq->withdraw;
            break;
        default:
            break;
    }
}

static bool quorumFresh(struct dispatch *d)
{
    return monoMs() < d->quorum_ms + adapterElectionTimeout(d->adapter);
}

static void quorumBarrierCb(struct adapter_propose *prop, int status)
{
    struct dispatch *d = prop->data;
    d->quorum_busy = false;
    if (status == 0 && d->is_leader && d->quorum_sent_ms > d->quorum_ms) {
        d->quorum_ms = d->quorum_sent_ms;
    }
    while (!tn_queue_empty(&d->confirm)) {
        tn_queue *q = tn_queue_head(&d->confirm);
        struct dispatch_req *req = TN_QUEUE_DATA(q, struct dispatch_req, queue);
        tn_queue_remove(q);
        if (d->closing) {
            completeStatus(d, req, TN__STATUS__CANCELED, "node shutting down");
        } else if (status == 0 && d->is_leader && quorumFresh(d)) {
            answerKeepalive(d, req);
        } else {
            req->state = REQ_NEW;
            notLeader(d, req);
        }
    }
}

/* Append a barrier to learn that a majority still follows this leader. */
static void quorumConfirm(struct dispatch *d)
{
    int rv;
    if (d->quorum_busy || !d->is_leader || d->closing) {
        return;
    }
    d->quorum_barrier.data = d;
    d->quorum_sent_ms = monoMs();
    rv = adapterBarrier(d->adapter, &d->quorum_barrier, quorumBarrierCb);
    if (rv != 0) {
        quorumBarrierCb(&d->quorum_barrier, rv);
        return;
    }
    d->quorum_busy = true;
}

struct changeState
{
    struct adapter_change change;
    struct dispatch_req *req;
};

static void changeDoneCb(struct adapter_change *change,
                         int status,
                         const char *message)
{
    struct changeState *cs = change->data;
    struct dispatch_req *req = cs->req;
    struct dispatch *d = req->d;
    free(cs);
    completeStatus(d, req, status, message);
}

/* Membership changes and leadership transfer (operators). */
static void operatorChange(struct dispatch *d, struct dispatch_req *req)
{
    const Tn__Request *rq = req->request;
    struct changeState *cs;
    char msg[256];
    int rv;

    cs = calloc(1, sizeof *cs);
    if (cs == NULL) {
        completeStatus(d, req, TN__STATUS__INTERNAL, "out of memory");
        return;
    }
    cs->req = req;
    cs->change.data = cs;
    if (rq->body_case == TN__REQUEST__BODY_TRANSFER) {
        tnInfof("\"leadership transfer requested\" to=%llu",
                (unsigned long long)rq->transfer->id);
        rv = adapterTransferWait(d->adapter, &cs->change, rq->transfer->id,
                                 changeDoneCb, msg, sizeof msg);
    } else if (rq->body_case == TN__REQUEST__BODY_MEMBER_ADD) {
        rv = adapterAddMember(d->adapter, &cs->change, rq->member_add->id,
                              rq->member_add->raft_address, changeDoneCb,
                              msg, sizeof msg);
    } else {
        rv = adapterRemoveMember(d->adapter, &cs->change,
                                 rq->member_remove->id, changeDoneCb, msg,
                                 sizeof msg);
    }
    if (rv != 0) {
        free(cs);
        completeStatus(d, req, rv, msg);
        return;
    }
    req->state = REQ_BATCHED; /* in flight: the callback comes */
}

static void process(struct dispatch *d, struct dispatch_req *req)
{
    Tn__Request *rq = req->request;

    switch (rq->body_case) {
        case TN__REQUEST__BODY_CLUSTER_STATUS:
            answerCluster(d, req);
            return;
        case TN__REQUEST__BODY_GET_LOCK:
        case TN__REQUEST__BODY_LIST_LOCKS: {
            bool stale = rq->body_case == TN__REQUEST__BODY_GET_LOCK
                             ? rq->get_lock->stale
                             : rq->list_locks->stale;
            if (stale) {
                answerOrWatch(d, req);
            } else if (!d->is_leader) {
                notLeader(d, req);
            } else {
                req->state = REQ_READ;
                tn_queue_insert_tail(&d->reads, &req->queue);
                scheduleIdle(d);
            }
            return;
        }
        case TN__REQUEST__BODY_WATCH: {
            const Tn__Watch *w = rq->watch;
            size_t n = w->resource != NULL ? strlen(w->resource) : 0;
            if (n == 0 && !w->prefix) {
                completeStatus(d, req, TN__STATUS__INVALID_ARGUMENT,
                               "watch.resource: empty (set prefix to watch "
                               "every resource)");
            } else if (n > 512) {
                completeStatus(d, req, TN__STATUS__INVALID_ARGUMENT,
                               "watch.resource: longer than 512 bytes");
            } else if (d->n_streams >= MAX_STREAMS) {
                completeStatus(d, req, TN__STATUS__RATE_LIMITED,
                               "too many watches on this node");
            } else if (!w->stale && !d->is_leader) {
                /* Streams are not relayed: the client goes to the leader
                 * (or asks for a stale stream). */
                completeStatus(d, req, TN__STATUS__NOT_LEADER,
                               "not the leader");
            } else {
                req->stream = true;
                req->watch_index = w->index;
                d->n_streams++;
                if (w->stale) {
                    streamStart(d, req);
                } else {
                    req->state = REQ_READ;
                    tn_queue_insert_tail(&d->reads, &req->queue);
                    scheduleIdle(d);
                }
            }
            return;
        }
        case TN__REQUEST__BODY_WATCH_CANCEL:
            /* The RPC front end answers it on the watch's connection. */
            completeStatus(d, req, TN__STATUS__INVALID_ARGUMENT,
                           "watch_cancel: only on the connection of the "
                           "watch");
            return;
        case TN__REQUEST__BODY_MEMBER_ADD:
        case TN__REQUEST__BODY_MEMBER_REMOVE:
        case TN__REQUEST__BODY_TRANSFER:
            if (!d->is_leader) {
                notLeader(d, req);
            } else {
                operatorChange(d, req);
            }
            return;
        case TN__REQUEST__BODY_SNAPSHOT_SAVE:
            if (!d->is_leader) {
                notLeader(d, req);
            } else {
                req->state = REQ_READ;
                tn_queue_insert_tail(&d->reads, &req->queue);
                scheduleIdle(d);
            }
            return;
        case TN__REQUEST__BODY_KEEPALIVE:
            if (!d->is_leader) {
                notLeader(d, req);
            } else if (!d->ready) {
                req->state = REQ_NOT_READY;
                tn_queue_insert_tail(&d->not_ready, &req->queue);
            } else if (!quorumFresh(d)) {
                /* Not heard from a majority lately (e.g. this process was
                 * paused): confirm leadership before answering. */
                req->state = REQ_NOT_READY;
                tn_queue_insert_tail(&d->confirm, &req->queue);
                quorumConfirm(d);
            } else {
                answerKeepalive(d, req);
            }
            return;
        default:
            break;
    }
    if (!isMutation(rq->body_case)) {
        completeStatus(d, req, TN__STATUS__INVALID_ARGUMENT,
                       "request has no known body");
        return;
    }
    if (!d->is_leader) {
        notLeader(d, req);
        return;
    }
    submitMutation(d, req);
}

static bool validSubmessage(const Tn__Request *rq)
{
    switch (rq->body_case) {
        case TN__REQUEST__BODY_SESSION_OPEN:
            return rq->session_open != NULL;
        case TN__REQUEST__BODY_KEEPALIVE:
            return rq->keepalive != NULL;
        case TN__REQUEST__BODY_SESSION_CLOSE:
            return rq->session_close != NULL;
        case TN__REQUEST__BODY_ACQUIRE:
            return rq->acquire != NULL;
        case TN__REQUEST__BODY_RELEASE:
            return rq->release != NULL;
        case TN__REQUEST__BODY_RENEW:
            return rq->renew != NULL;
        case TN__REQUEST__BODY_GET_LOCK:
            return rq->get_lock != NULL;
        case TN__REQUEST__BODY_LIST_LOCKS:
            return rq->list_locks != NULL;
        case TN__REQUEST__BODY_CLUSTER_STATUS:
            return rq->cluster_status != NULL;
        case TN__REQUEST__BODY_MEMBER_INFO:
            return rq->member_info != NULL;
        case TN__REQUEST__BODY_MEMBER_ADD:
            return rq->member_add != NULL;
        case TN__REQUEST__BODY_MEMBER_REMOVE:
            return rq->member_remove != NULL;
        case TN__REQUEST__BODY_TRANSFER:
            return rq->transfer != NULL;
        case TN__REQUEST__BODY_SNAPSHOT_SAVE:
            return rq->snapshot_save != NULL;
        case TN__REQUEST__BODY_SNAPSHOT_RESTORE:
            return rq->snapshot_restore != NULL;
        case TN__REQUEST__BODY_WITHDRAW:
            return rq->withdraw != NULL;
        case TN__REQUEST__BODY_WATCH:
            return rq->watch != NULL;
        case TN__REQUEST__BODY_WATCH_CANCEL:
            return rq->watch_cancel != NULL;
        default:
            return false;
    }
}

int dispatchSubmit(struct dispatch *d, struct dispatch_req *req)
{
    if (d->closing) {
        return TN__STATUS__CANCELED;
    }
    if (req->request == NULL || req->cb == NULL) {
        return TN__STATUS__INVALID_ARGUMENT;
    }
    req->d = d;
    req->state = REQ_NEW;
    req->cancel = false;
    req->stream = false;
    req->watch_index = 0;
    req->priv = NULL;
    req->started_ns = monoNs();
    tn_queue_init(&req->queue);
    d->stats.requests++;
    if (req->request->group != 0) {
        completeStatus(d, req, TN__STATUS__INVALID_ARGUMENT,
                       "group: only group 0 exists");
        return 0;
    }
    if (!validSubmessage(req->request)) {
        completeStatus(d, req, TN__STATUS__INVALID_ARGUMENT,
                       "request has no known body");
        return 0;
    }
    process(d, req);
    return 0;
}

/* Ask the leader to take a queued acquire out of the lock's queue. */
struct withdrawReq
{
    struct dispatch_req req;
    Tn__Request request;
    Tn__Withdraw body;
    char resource[];
};

static void withdrawCb(struct dispatch_req *req, const Tn__Response *resp)
{
    if (resp->status != TN__STATUS__OK &&
        resp->status != TN__STATUS__NOT_FOUND) {
        tnWarnf("\"could not withdraw a waiter\" status=%d message=\"%s\"",
                resp->status, resp->message ? resp->message : "");
    } else {
        tnDebugf("\"waiter withdrawn\" status=%d message=\"%s\"",
                 resp->status, resp->message ? resp->message : "");
    }
    free(req->data);
}

static void withdrawSubmit(struct dispatch *d,
                           const char *resource,
                           uint64_t session,
                           uint64_t client_id,
                           uint64_t seq)
{
    size_t n = strlen(resource);
    struct withdrawReq *w = calloc(1, sizeof *w + n + 1);
    if (w == NULL || client_id == 0) {
        free(w);
        return;
    }
    memcpy(w->resource, resource, n + 1);
    tn__request__init(&w->request);
    tn__withdraw__init(&w->body);
    w->body.session = session;
    w->body.resource = w->resource;
    w->body.client_id = client_id;
    w->body.seq = seq;
    w->request.forward = true;
    w->request.body_case = TN__REQUEST__BODY_WITHDRAW;
    w->request.withdraw = &w->body;
    w->req.data = w;
    w->req.request = &w->request;
    w->req.cb = withdrawCb;
    if (dispatchSubmit(d, &w->req) != 0) {
        free(w);
    }
}

void dispatchCancel(struct dispatch *d, struct dispatch_req *req)
{
    const Tn__Request *rq = req->request;
    tnDebugf("\"cancel\" state=%d body=%d client=%llu seq=%llu", req->state,
             (int)rq->body_case, (unsigned long long)req->client_id,
             (unsigned long long)req->seq);
    if (rq->body_case == TN__REQUEST__BODY_ACQUIRE &&
        rq->acquire->wait_ms > 0 && !d->closing &&
        (req->state == REQ_WAITING ||
         (req->state == REQ_FORWARDED && !req->cancel))) {
        /* The requester went away: its place in the queue must not be
         * granted to nobody. */
        withdrawSubmit(d, rq->acquire->resource ? rq->acquire->resource : "",
                       req->state == REQ_WAITING ? req->wait_session : 0,
                       req->client_id, req->seq);
    }
    switch (req->state) {
        case REQ_WATCH:
            d->n_watches--;
            /* fall through */
        case REQ_STREAM:
        case REQ_WAITING:
        case REQ_READ:
        case REQ_NOT_READY:
            tn_queue_remove(&req->queue);
            completeStatus(d, req, TN__STATUS__CANCELED, "canceled");
            break;
        default:
            /* Batched, forwarded or done: the callback comes soon. */
            req->cancel = true;
            break;
    }
}

void dispatchHealth(struct dispatch *d, struct dispatch_health *out)
{
    memset(out, 0, sizeof *out);
    out->node_id = d->cfg.node_id;
    if (d->adapter == NULL) {
        return;
    }
    out->is_leader = d->is_leader;
    out->has_leader = adapterLeader(d->adapter, NULL) != 0;
    out->term = adapterTerm(d->adapter);
    out->commit_index = adapterCommitIndex(d->adapter);
    out->applied_index = adapterAppliedIndex(d->adapter);
    out->ready = out->has_leader && (d->is_leader ? d->ready : true) &&
                 out->applied_index >= out->commit_index && out->commit_index > 0;
    if (out->ready && !d->is_leader) {
        /* A follower is ready only once it can relay to the leader. */
        const char *rpc = NULL;
        const char *http = NULL;
        uint64_t leader = adapterLeader(d->adapter, NULL);
        out->ready = fsmMemberGet(d->fsm, leader, &rpc, &http) &&
                     rpc != NULL && rpc[0] != '\0';
    }
}

/* ------------------------------------------------ leadership and timers */

static void registerSelf(struct dispatch *d)
{
    const char *rpc = NULL;
    const char *http = NULL;
    Tn__Command *cmd;
    Tn__MemberInfo *m;

    if (fsmMemberGet(d->fsm, d->cfg.node_id, &rpc, &http) &&
        strcmp(rpc, d->cfg.rpc_address) == 0 &&
        strcmp(http, d->cfg.http_address) == 0) {
        return;
    }
    cmd = batchAdd(d, NULL, false);
    if (cmd == NULL) {
        return;
    }
    m = tnArenaAlloc(&d->open->arena, sizeof *m);
    if (m == NULL) {
        cmd->body_case = TN__COMMAND__BODY_TICK;
        cmd->tick = tnArenaAlloc(&d->open->arena, sizeof *cmd->tick);
        return;
    }
    tn__member_info__init(m);
    m->id = d->cfg.node_id;
    m->rpc_address = arenaStrdup(&d->open->arena, d->cfg.rpc_address);
    m->http_address = arenaStrdup(&d->open->arena, d->cfg.http_address);
    m->raft_address = arenaStrdup(&d->open->arena, d->cfg.raft_address);
    cmd->body_case = TN__COMMAND__BODY_MEMBER;
    cmd->member = m;
}

/* A follower registers its addresses through the leader. */
struct memberReg
{
    struct dispatch_req req;
    Tn__Request request;
    Tn__MemberInfo info;
};

static void memberRegCb(struct dispatch_req *req, const Tn__Response *resp)
{
    (void)resp;
    free(req->data);
}

/* Send this node's MemberInfo to the leader (relayed): its addresses, and
 * its disk alarm when @low_disk. */
static void memberInfoSubmit(struct dispatch *d, bool low_disk)
{
    struct memberReg *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return;
    }
    tn__request__init(&m->request);
    tn__member_info__init(&m->info);
    m->info.id = d->cfg.node_id;
    m->info.rpc_address = (char *)d->cfg.rpc_address;
    m->info.http_address = (char *)d->cfg.http_address;
    m->info.raft_address = (char *)d->cfg.raft_address;
    m->info.low_disk = low_disk;
    m->info.free_bytes = low_disk ? d->disk_free : 0;
    m->request.forward = true;
    m->request.body_case = TN__REQUEST__BODY_MEMBER_INFO;
    m->request.member_info = &m->info;
    m->req.data = m;
    m->req.request = &m->request;
    m->req.cb = memberRegCb;
    if (dispatchSubmit(d, &m->req) != 0) {
        free(m);
    }
}

static void registerViaLeader(struct dispatch *d)
{
    const char *rpc = NULL;
    const char *http = NULL;

    if (fsmMemberGet(d->fsm, d->cfg.node_id, &rpc, &http) &&
        strcmp(rpc, d->cfg.rpc_address) == 0 &&
        strcmp(http, d->cfg.http_address) == 0) {
        return;
    }
    memberInfoSubmit(d, false);
}

/* Make sure the cluster knows this node's addresses (a no-op once it
 * does). Returns false when there is no ready leader to tell yet: the
 * timer then tries again at its next tick instead of a second later, so
 * that a starting cluster forwards requests and lists its members as soon
 * as it has a leader. */
static bool registerMember(struct dispatch *d)
{
    uint64_t leader;
    const char *rpc = NULL;
    const char *http = NULL;

    if (d->is_leader && d->ready) {
        registerSelf(d);
        return true;
    }
    leader = d->is_leader ? 0 : adapterLeader(d->adapter, NULL);
    /* A follower relays through the leader's address, which it learns
     * from the leader's own registration: until then a relay would only
     * come back NOT_LEADER. */
    if (leader != 0 && fsmMemberGet(d->fsm, leader, &rpc, &http) &&
        rpc != NULL && rpc[0] != '\0') {
        registerViaLeader(d);
        return true;
    }
    return false;
}

static int resetLeaseCb(void *data, const struct fsm_session_view *s)
{
    struct dispatch *d = data;
    uint64_t now = monoMs();
    /* Rule 4: at least the full TTL plus the election timeout from the
     * moment this leader's first entry is applied. Never shorter. */
    if (leasesExtend(&d->leases, s->id, s->epoch, s->ttl_ms,
                     now + s->ttl_ms + adapterElectionTimeout(d->adapter)) !=
        0) {
        tnErrorf("\"out of memory tracking a lease\" session=%llu",
                 (unsigned long long)s->id);
    }
    return 0;
}

static void startBarrierCb(struct adapter_propose *prop, int status)
{
    struct dispatch *d = prop->data;
    d->start_barrier_busy = false;
    if (d->closing) {
        return;
    }
    if (status != 0 || !d->is_leader ||
        d->leader_term != adapterTerm(d->adapter)) {
        return;
    }
    d->ready = true;
    d->quorum_ms = monoMs(); /* just acknowledged by a majority */
    fsmSessionForEach(d->fsm, resetLeaseCb, d);
    tnInfof("\"leader ready\" sessions=%zu index=%llu",
            leasesCount(&d->leases), (unsigned long long)fsmIndex(d->fsm));
    registerSelf(d);
    d->member_retry = false; /* just done */
    processNotReady(d);
    scheduleIdle(d);
}

static void changedHook(void *data)
{
    struct dispatch *d = data;
    bool leader = adapterRole(d->adapter) == ADAPTER_LEADER;
    uint64_t term = adapterTerm(d->adapter);

    if (d->closing) {
        return;
    }
    /* A new leader or term: tell it this node's addresses at the next tick
     * (nothing is sent if the cluster already has them). */
    d->member_retry = true;
    if (leader && (!d->is_leader || term != d->leader_term)) {
        int rv;
        d->is_leader = true;
        d->ready = false;
        d->leader_term = term;
        d->stats.leader_changes++;
        leasesClear(&d->leases);
        d->start_barrier.data = d;
        d->quorum_ms = 0;
        if (!d->start_barrier_busy) {
            rv = adapterBarrier(d->adapter, &d->start_barrier,
                                startBarrierCb);
            if (rv == 0) {
                d->start_barrier_busy = true;
            }
        }
    } else if (!leader && d->is_leader) {
        d->is_leader = false;
        d->ready = false;
        leasesClear(&d->leases);
        d->tick_busy = false;
        /* Linearizable streams end: their client resumes on the new
         * leader from the index of its last event. */
        {
            tn_queue *q = tn_queue_head(&d->streams);
            while (q != &d->streams) {
                struct dispatch_req *req =
                    TN_QUEUE_DATA(q, struct dispatch_req, queue);
                q = q->next;
                if (!req->request->watch->stale) {
                    tn_queue_remove(&req->queue);
                    completeStatus(d, req, TN__STATUS__NOT_LEADER,
                                   "not the leader");
                }
            }
        }
        /* Reads and keepalives waiting for this leader go elsewhere. */
        while (!tn_queue_empty(&d->reads)) {
            tn_queue *q = tn_queue_head(&d->reads);
            struct dispatch_req *req =
                TN_QUEUE_DATA(q, struct dispatch_req, queue);
            tn_queue_remove(q);
            req->state = REQ_NEW;
            notLeader(d, req);
        }
        while (!tn_queue_empty(&d->not_ready)) {
            tn_queue *q = tn_queue_head(&d->not_ready);
            struct dispatch_req *req =
                TN_QUEUE_DATA(q, struct dispatch_req, queue);
            tn_queue_remove(q);
            req->state = REQ_NEW;
            notLeader(d, req);
        }
        /* Unproposed commands can no longer be proposed here. */
        batchUnpark(d);
        if (d->open != NULL) {
            batchFail(d, d->open, TN__STATUS__NOT_LEADER);
            batchFree(d->open);
            d->open = NULL;
        }
        while (!tn_queue_empty(&d->full)) {
            tn_queue *q = tn_queue_head(&d->full);
            struct batch *b = TN_QUEUE_DATA(q, struct batch, queue);
            tn_queue_remove(q);
            batchFail(d, b, TN__STATUS__NOT_LEADER);
            batchFree(b);
        }
    }
}

/* While short of disk: a leader hands leadership over (at most every 5 s);
 * a follower tells the leader, which refuses writes cluster-wide. */
static void diskReport(struct dispatch *d, uint64_t now)
{
    if (d->is_leader) {
        if (now - d->last_transfer_ms >= 5000) {
            d->last_transfer_ms = now;
            if (adapterTransfer(d->adapter, 0) == 0) {
                tnWarnf("\"disk space low: handing leadership over\"");
            }
        }
        return;
    }
    if (adapterLeader(d->adapter, NULL) != 0) {
        memberInfoSubmit(d, true);
    }
}

void dispatchSetDiskLow(struct dispatch *d, bool low, uint64_t free_bytes)
{
    d->disk_low = low;
    d->disk_free = free_bytes;
    if (low) {
        diskReport(d, monoMs());
    }
}

/* Progress events: each stream parked since its deadline is answered with
 * the current state, exactly like after a change, so a watcher hears from
 * its node at least every watch_progress_ms (and old clients merely see
 * the same state again). The list is in deadline order: the pass stops at
 * the first stream not yet due. A linearizable stream gets none from a
 * node that is not a ready leader with a fresh majority confirmation: a
 * deposed or cut-off leader must go quiet so that its watchers move on
 * (changedHook ends those streams with NOT_LEADER once raft steps down). */
static void streamsProgress(struct dispatch *d, uint64_t now)
{
    bool leading = d->is_leader && d->ready && quorumFresh(d);

    while (!tn_queue_empty(&d->streams)) {
        tn_queue *q = tn_queue_head(&d->streams);
        struct dispatch_req *req = TN_QUEUE_DATA(q, struct dispatch_req, queue);
        if (req->deadline_ms > now) {
            break;
        }
        tn_queue_remove(q);
        if (!req->request->watch->stale && !leading) {
            streamPark(d, req); /* to the tail: try again next interval */
            continue;
        }
        req->state = REQ_READ;
        tn_queue_insert_tail(&d->fired, &req->queue);
        scheduleIdle(d);
    }
}

static void timerCb(uv_timer_t *t)
{
    struct dispatch *d = t->data;
    uint64_t now;
    struct lease *l;

    if (d->closing || d->adapter == NULL) {
        return;
    }
    now = monoMs();
    if (d->n_watches > 0) {
        tn_queue *q = tn_queue_head(&d->watches);
        while (q != &d->watches) {
            struct dispatch_req *req =
                TN_QUEUE_DATA(q, struct dispatch_req, queue);
            q = q->next;
            if (req->deadline_ms <= now) {
                tn_queue_remove(&req->queue);
                d->n_watches--;
                answerRead(d, req);
            }
        }
    }
    streamsProgress(d, now);
    batchUnpark(d);
    if (d->is_leader && d->ready &&
        now >= d->quorum_ms + adapterElectionTimeout(d->adapter) / 3) {
        /* Keep the majority confirmation fresh on an idle leader. */
        quorumConfirm(d);
    }
    if (d->is_leader && d->ready) {
        /* Propose an expiry for each session past its deadline. */
        while ((l = leasesNextExpired(&d->leases, now)) != NULL) {
            Tn__Command *cmd = batchAdd(d, NULL, false);
            Tn__SessionExpire *e;
            if (cmd == NULL) {
                break;
            }
            e = tnArenaAlloc(&d->open->arena, sizeof *e);
            if (e == NULL) {
                cmd->body_case = TN__COMMAND__BODY_TICK;
                cmd->tick = tnArenaAlloc(&d->open->arena, sizeof *cmd->tick);
                break;
            }
            tn__session_expire__init(e);
            e->session = l->session;
            e->epoch = l->epoch;
            cmd->body_case = TN__COMMAND__BODY_SESSION_EXPIRE;
            cmd->session_expire = e;
            leasesSetExpiring(&d->leases, l);
            d->stats.expiries_proposed++;
            tnInfof("\"session expired\" session=%llu epoch=%llu ttl_ms=%u",
                    (unsigned long long)l->session,
                    (unsigned long long)l->epoch, l->ttl_ms);
        }
        /* Let cluster time advance when a waiter or lock-delay is due. */
        if (!d->tick_busy && fsmNextDeadline(d->fsm) <= realMs()) {
            Tn__Command *cmd = batchAdd(d, NULL, false);
            if (cmd != NULL) {
                Tn__Tick *tick = tnArenaAlloc(&d->open->arena, sizeof *tick);
                if (tick != NULL) {
                    tn__tick__init(tick);
                    cmd->body_case = TN__COMMAND__BODY_TICK;
                    cmd->tick = tick;
                    d->tick_busy = true;
                } else {
                    d->open->n--;
                }
            }
        }
    }
    if (now >= d->member_check_ms) {
        d->member_check_ms = now + 1000;
        if (d->disk_low) {
            diskReport(d, now);
        }
        d->member_retry = !registerMember(d);
    } else if (d->member_retry) {
        d->member_retry = !registerMember(d);
    }
}

static void idleCb(uv_idle_t *h)
{
    struct dispatch *d = h->data;
    if (d->adapter != NULL && d->is_leader && !d->closing) {
        flushBatches(d);
        startReadBarrier(d);
    }
    answerFired(d);
    deliverDone(d);
    if (tn_queue_empty(&d->done) && tn_queue_empty(&d->fired) &&
        (d->open == NULL || d->open->n == 0 ||
         d->outstanding >= d->cfg.max_outstanding)) {
        uv_idle_stop(h);
        d->idle_active = false;
    }
}

static void scheduleIdle(struct dispatch *d)
{
    if (!d->idle_active && !uv_is_closing((uv_handle_t *)&d->idle)) {
        uv_idle_start(&d->idle, idleCb);
        d->idle_active = true;
    }
}

/* ------------------------------------------------------------ lifecycle */

int dispatchInit(struct dispatch **out,
                 uv_loop_t *loop,
                 struct fsm *fsm,
                 const struct dispatch_config *config)
{
    struct dispatch *d = calloc(1, sizeof *d);
    int rv;

    if (d == NULL) {
        return TN__STATUS__INTERNAL;
    }
    d->loop = loop;
    d->fsm = fsm;
    d->cfg = *config;
    if (d->cfg.max_outstanding == 0) {
        d->cfg.max_outstanding = 1;
    }
    if (d->cfg.max_batch == 0) {
        d->cfg.max_batch = 4096;
    }
    if (d->cfg.max_frame == 0) {
        d->cfg.max_frame = 1024 * 1024;
    }
    if (d->cfg.watch_progress_ms == 0) {
        d->cfg.watch_progress_ms = DISPATCH_WATCH_PROGRESS_MS;
    }
    leasesInit(&d->leases);
    metricsInit(&d->metrics);
    tn_queue_init(&d->full);
    tn_queue_init(&d->proposed);
    tn_queue_init(&d->reads);
    tn_queue_init(&d->reads_inflight);
    tn_queue_init(&d->not_ready);
    tn_queue_init(&d->waiters);
    tn_queue_init(&d->watches);
    tn_queue_init(&d->confirm);
    tn_queue_init(&d->fired);
    tn_queue_init(&d->streams);
    tn_queue_init(&d->done);
    d->changed = calloc(CHANGED_SLOTS, sizeof *d->changed);
    if (d->changed == NULL) {
        free(d);
        return TN__STATUS__INTERNAL;
    }
    d->boot_nonce = random64() & ~(uint64_t)0xffffffff;
    d->self_client_id = random64() | 1;
    rv = forwarderInit(&d->fwd, loop, d->cfg.max_frame);
    if (rv != 0) {
        free(d);
        return rv;
    }
    uv_idle_init(loop, &d->idle);
    d->idle.data = d;
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, timerCb, 10, 10);
    fsm->data = d;
    fsm->event_cb = eventHook;
    *out = d;
    return 0;
}

void dispatchAdapterHooks(struct dispatch *d, struct adapter_hooks *hooks)
{
    hooks->data = d;
    hooks->applied = appliedHook;
    hooks->changed = changedHook;
}

void dispatchSetAdapter(struct dispatch *d, struct adapter *a)
{
    d->adapter = a;
}

static void dispatchHandleCloseCb(uv_handle_t *h)
{
    struct dispatch *d = h->data;
    if (--d->open_handles > 0) {
        return;
    }
    /* Not freed here: an HTTP or RPC connection still open may submit
     * before its server is closed (dispatchFree). */
    if (d->close_cb != NULL) {
        d->close_cb(d->close_data);
    }
}

void dispatchFree(struct dispatch *d)
{
    leasesClose(&d->leases);
    free(d->changed);
    free(d);
}

static void failQueue(struct dispatch *d, tn_queue *head)
{
    while (!tn_queue_empty(head)) {
        tn_queue *q = tn_queue_head(head);
        struct dispatch_req *req = TN_QUEUE_DATA(q, struct dispatch_req, queue);
        tn_queue_remove(q);
        completeStatus(d, req, TN__STATUS__CANCELED, "node shutting down");
    }
}

void dispatchClose(struct dispatch *d, void (*cb)(void *data), void *data)
{
    d->closing = true;
    d->close_cb = cb;
    d->close_data = data;
    failQueue(d, &d->reads);
    failQueue(d, &d->not_ready);
    failQueue(d, &d->confirm);
    failQueue(d, &d->waiters);
    failQueue(d, &d->watches);
    d->n_watches = 0;
    failQueue(d, &d->streams);
    failQueue(d, &d->fired);
    batchUnpark(d);
    if (d->open != NULL) {
        batchFail(d, d->open, TN__STATUS__CANCELED);
        batchFree(d->open);
        d->open = NULL;
    }
    while (!tn_queue_empty(&d->full)) {
        tn_queue *q = tn_queue_head(&d->full);
        struct batch *b = TN_QUEUE_DATA(q, struct batch, queue);
        tn_queue_remove(q);
        batchFail(d, b, TN__STATUS__CANCELED);
        batchFree(b);
    }
    /* Relayed requests fail (their callbacks complete them) before the last
     * delivery: after it, nothing is left to deliver. */
    forwarderClose(d->fwd);
    d->fwd = NULL;
    deliverDone(d);
    uv_timer_stop(&d->timer);
    uv_idle_stop(&d->idle);
    d->open_handles = 2;
    uv_close((uv_handle_t *)&d->timer, dispatchHandleCloseCb);
    uv_close((uv_handle_t *)&d->idle, dispatchHandleCloseCb);
}

void dispatchStats(struct dispatch *d, struct dispatch_stats *out)
{
    *out = d->stats;
    out->outstanding = d->outstanding;
    out->sessions_tracked = (unsigned)leasesCount(&d->leases);
}

void dispatchMetrics(struct dispatch *d,
                     void (*emit)(void *ctx, const char *text, size_t len),
                     void *ctx)
{
    struct fsm_stats fs;
    struct metrics_gauges g;
    fsmStats(d->fsm, &fs);
    memset(&g, 0, sizeof g);
    g.sessions = fs.sessions;
    g.locks_held = fs.locks_held;
    g.waiters = fs.waiters;
    g.grants = fs.grants;
    g.releases = fs.releases;
    g.expiries = fs.expiries;
    g.lock_delay_hits = fs.lock_delay_hits;
    g.conflicts = fs.conflicts;
    g.late_requests = fs.late_requests;
    g.leader_changes = d->stats.leader_changes;
    g.requests = d->stats.requests;
    g.in_flight = d->stats.requests - d->completed;
    g.batches = d->stats.batches;
    g.commands = d->stats.commands;
    g.forwarded = d->stats.forwarded;
    g.expiries_proposed = d->stats.expiries_proposed;
    g.parked = d->stats.parked;
    g.leases_tracked = leasesCount(&d->leases);
    metricsRender(&d->metrics, &g, emit, ctx);
}

size_t dispatchContention(struct dispatch *d,
                          const struct metrics_contended **out,
                          size_t max)
{
    return metricsTop(&d->metrics, out, max);
}
