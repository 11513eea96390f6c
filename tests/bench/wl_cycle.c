/* tnbench: closed-loop lock cycles.
 *
 * RPC client (rpc-cycle, contend, failover): session_open → [acquire →
 * (hold) → release]* → session_close, keepalives every ttl/3 on the same
 * connection. Every grant goes to the grant log; its window ends at the
 * first send of the release, or earlier at the lease end the client
 * computes from its last successful keepalive (DESIGN §4.5).
 *
 * With --requeue-early (contend), a client sends its next acquire right
 * behind its release, in the same write: the two share an entry. The
 * client then has two calls, `op` and `rq`, and swaps them: the release
 * goes on the call that got the grant, the next acquire on the other one,
 * sent once (a failure completes it, so that no retried acquire can pass
 * a release still in flight); other acquires wait until no release is in
 * flight.
 *
 * HTTP client (http-cycle): PUT /v1/locks/{id} → 201 + ETag → DELETE with
 * If-Match → 204, on a keep-alive connection. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* ------------------------------------------------------------ RPC client */

struct rcl
{
    int idx;
    struct rconn *conn;  /* shared by the clients of --conns */
    struct call op;
    struct call rq;      /* --requeue-early: the second operation call */
    struct call ka;
    uv_timer_t timer;    /* backoff and hold */
    void (*later)(struct rcl *cl); /* what the timer runs */
    uv_timer_t ka_timer;
    bool ka_running;
    uint64_t session;
    uint32_t ttl;
    uint64_t safe_until;
    bool lost;           /* the session is known to be gone */
    char res[BENCH_RES_MAX];
    uint32_t res_id;
    uint64_t token;
    size_t grant;
    bool holding;
    bool release_unknown; /* the last release did not succeed */
    bool next_pending;    /* requeue-early: rclNext once a call is free */
    bool finished;
};

static struct cycle_cfg cf;
static struct rcl *rcls;
static struct rconn *rconns;

static void rclNext(struct rcl *cl);
static void rclOpen(struct rcl *cl);

/* The call for the next operation: `op`, or with --requeue-early whichever
 * is free; NULL (and rclNext runs when one frees up) while a release is in
 * flight. */
static struct call *rclCall(struct rcl *cl)
{
    if (!cf.requeue_early) {
        return &cl->op;
    }
    if (cl->op.busy || cl->rq.busy) {
        cl->next_pending = true;
        return NULL;
    }
    return &cl->op;
}

static void rclFinish(struct rcl *cl)
{
    if (cl->finished) {
        return;
    }
    cl->finished = true;
    uv_timer_stop(&cl->ka_timer);
    uv_timer_stop(&cl->timer);
    benchClientDone();
}

static void timerFire(uv_timer_t *t)
{
    struct rcl *cl = t->data;
    cl->later(cl);
}

/* Runs @fn(cl) after @ms. */
static void rclLater(struct rcl *cl, void (*fn)(struct rcl *), uint64_t ms)
{
    cl->later = fn;
    uv_timer_start(&cl->timer, timerFire, ms, 0);
}

/* The lock's window ends: at @t_release or at the lease end if earlier. */
static void rclEndGrant(struct rcl *cl, uint64_t t_release)
{
    if (!cl->holding) {
        return;
    }
    grantsEnd(&B->grants, cl->grant,
              t_release < cl->safe_until ? t_release : cl->safe_until);
    cl->holding = false;
}

static void rclSessionLost(struct rcl *cl)
{
    if (!cl->lost) {
        cl->lost = true;
        B->sessions_lost++;
    }
}

static void closeDone(struct call *k, int status, const Tn__Response *r)
{
    struct rcl *cl = k->data;
    (void)r;
    if (status != TN__STATUS__OK && status != TN__STATUS__SESSION_EXPIRED) {
        benchError(status);
    }
    rclFinish(cl);
}

static void rclClose(struct rcl *cl)
{
    struct call *k;
    if (cl->session == 0 || cl->lost) {
        rclFinish(cl);
        return;
    }
    if ((k = rclCall(cl)) == NULL) {
        return;
    }
    k->done = closeDone;
    callSessionClose(k, cl->session);
    callStart(k, cf.timeout_ms);
}

static void kaDone(struct call *k, int status, const Tn__Response *r)
{
    struct rcl *cl = k->data;
    if (k->u.ka.session != cl->session) {
        return; /* an old session's */
    }
    if (status == TN__STATUS__OK) {
        uint32_t ttl = cl->ttl;
        uint64_t su;
        if (r->body_case == TN__RESPONSE__BODY_SESSION && r->session->ttl_ms) {
            ttl = r->session->ttl_ms;
        }
        su = safeUntil(k->t_first, ttl);
        if (su > cl->safe_until) {
            cl->safe_until = su;
        }
    } else if (status == TN__STATUS__SESSION_EXPIRED) {
        rclSessionLost(cl);
    } else {
        benchError(status);
    }
}

static void kaTimerCb(uv_timer_t *t)
{
    struct rcl *cl = t->data;
    if (cl->ka.busy || cl->session == 0 || cl->lost || cl->finished) {
        return;
    }
    callKeepalive(&cl->ka, cl->session);
    callStart(&cl->ka, cl->ttl);
}

static void openDone(struct call *k, int status, const Tn__Response *r)
{
    struct rcl *cl = k->data;
    if (status != TN__STATUS__OK ||
        r->body_case != TN__RESPONSE__BODY_SESSION) {
        benchError(status);
        if (B->stopping) {
            rclFinish(cl);
        } else {
            rclLater(cl, rclOpen, 100);
        }
        return;
    }
    cl->session = r->session->session;
    cl->ttl = r->session->ttl_ms ? r->session->ttl_ms : B->ttl_ms;
    cl->safe_until = safeUntil(k->t_first, cl->ttl);
    cl->lost = false;
    if (!cl->ka_running) {
        uint64_t every = cl->ttl / 3 ? cl->ttl / 3 : 1;
        /* Spread the clients' keepalives over the period. */
        uv_timer_start(&cl->ka_timer, kaTimerCb,
                       every - (uint64_t)cl->idx * every / (uint64_t)B->clients,
                       every);
        cl->ka_running = true;
    }
    rclNext(cl);
}

static void rclOpen(struct rcl *cl)
{
    char holder[32];
    struct call *k;
    if (B->stopping) {
        rclFinish(cl);
        return;
    }
    if ((k = rclCall(cl)) == NULL) {
        return;
    }
    snprintf(holder, sizeof holder, "c%d", cl->idx);
    k->done = openDone;
    callSessionOpen(k, holder, B->ttl_ms);
    callStart(k, cf.timeout_ms);
}

static void relDone(struct call *k, int status, const Tn__Response *r)
{
    struct rcl *cl = k->data;
    uint64_t now = nowNs();
    (void)r;
    rclEndGrant(cl, k->t_first);
    cl->release_unknown = status != TN__STATUS__OK;
    if (status == TN__STATUS__OK) {
        benchOp(cf.slot_rel, k->t_first, now);
        benchOp(cf.slot_cycle, k->t_cycle, now);
    } else {
        benchError(status);
        if (status == TN__STATUS__LEASE_EXPIRED ||
            status == TN__STATUS__SESSION_EXPIRED) {
            rclSessionLost(cl);
        }
    }
    if (cf.requeue_early) {
        /* The next acquire went out with this release, unless it had to
         * wait for this call. */
        if (cl->next_pending || (!cl->op.busy && !cl->rq.busy)) {
            cl->next_pending = false;
            rclNext(cl);
        }
        return;
    }
    rclNext(cl);
}

static void rclReleaseOn(struct rcl *cl, struct call *k)
{
    k->done = relDone;
    callRelease(k, cl->res, cl->token);
    callStart(k, cf.timeout_ms);
}

static void rclRelease(struct rcl *cl)
{
    rclReleaseOn(cl, &cl->op);
}

static void acqDone(struct call *k, int status, const Tn__Response *r);

/* Send an acquire on @k. */
static void rclAcquireOn(struct rcl *cl, struct call *k, bool once)
{
    k->t_cycle = nowNs();
    k->done = acqDone;
    callAcquire(k, cl->session, cl->res, cf.wait_ms);
    k->once = once;
    callStart(k, cf.timeout_ms);
}

static void acqDone(struct call *k, int status, const Tn__Response *r)
{
    struct rcl *cl = k->data;
    uint64_t now = nowNs();
    if (status == TN__STATUS__OK && r->body_case == TN__RESPONSE__BODY_LOCK) {
        if (cl->release_unknown && r->lock->token == cl->token &&
            cl->grant < B->grants.n) {
            /* Our release never went through and the session still holds
             * the lock: the same grant goes on (re-acquire is idempotent
             * and returns the same token), not a new one. */
            B->grants.v[cl->grant].t_end = UINT64_MAX;
        } else {
            cl->token = r->lock->token;
            cl->grant = grantsAdd(&B->grants, cl->res_id, (uint32_t)cl->idx,
                                  cl->token, now);
        }
        cl->release_unknown = false;
        cl->holding = true;
        if (cf.on_acquire != NULL) {
            cf.on_acquire(k, now);
        }
        benchOp(cf.slot_acq, k->t_first, now);
        if (cf.requeue_early && cf.hold_ms == 0) {
            struct call *next = k == &cl->op ? &cl->rq : &cl->op;
            rclReleaseOn(cl, k);
            if (B->stopping) {
                return;
            }
            if (next->busy) {
                cl->next_pending = true; /* an older release, still out */
            } else {
                rclAcquireOn(cl, next, true);
            }
            return;
        }
        if (cf.hold_ms > 0) {
            rclLater(cl, rclRelease, cf.hold_ms);
        } else {
            rclRelease(cl);
        }
        return;
    }
    benchError(status == TN__STATUS__OK ? CALL_EPROTO : status);
    switch (status) {
    case TN__STATUS__HELD:
    case TN__STATUS__LOCK_DELAY:
        rclLater(cl, rclNext, 1);
        break;
    case TN__STATUS__SESSION_EXPIRED:
        rclSessionLost(cl);
        rclNext(cl);
        break;
    default:
        rclLater(cl, rclNext, 10);
        break;
    }
}

static void rclNext(struct rcl *cl)
{
    struct call *k;
    if (B->stopping) {
        rclClose(cl);
        return;
    }
    if (cl->lost) {
        rclEndGrant(cl, nowNs());
        rclOpen(cl);
        return;
    }
    k = rclCall(cl);
    if (k != NULL) {
        rclAcquireOn(cl, k, false);
    }
}

void cycleStartClients(const struct cycle_cfg *cfg)
{
    cf = *cfg;
    rcls = calloc((size_t)B->clients, sizeof *rcls);
    if (rcls == NULL) {
        fprintf(stderr, "tnbench: out of memory\n");
        exit(3);
    }
    int n_conns = B->conns > 0 && B->conns < B->clients ? B->conns
                                                        : B->clients;
    uint32_t per_conn = (uint32_t)((B->clients + n_conns - 1) / n_conns);
    rconns = calloc((size_t)n_conns, sizeof *rconns);
    if (rconns == NULL) {
        fprintf(stderr, "tnbench: out of memory\n");
        exit(3);
    }
    for (int j = 0; j < n_conns; j++) {
        const char *addr = B->target_rpc;
        if (B->forward) {
            addr = B->rpc_eps[j % B->n_rpc];
        }
        /* Two calls per client: its operation and its keepalive. */
        rconnInit(&rconns[j], addr, 4 * per_conn);
    }
    for (int i = 0; i < B->clients; i++) {
        struct rcl *cl = &rcls[i];
        cl->idx = i;
        cl->conn = &rconns[i % n_conns];
        callInit(&cl->op, cl->conn, NULL, cl);
        callInit(&cl->rq, cl->conn, NULL, cl);
        callInit(&cl->ka, cl->conn, kaDone, cl);
        uv_timer_init(B->loop, &cl->timer);
        cl->timer.data = cl;
        uv_timer_init(B->loop, &cl->ka_timer);
        cl->ka_timer.data = cl;
        if (cf.one_resource) {
            snprintf(cl->res, sizeof cl->res, "bench/%s/%s", B->run_id,
                     cf.prefix);
            cl->res_id = 0;
        } else {
            snprintf(cl->res, sizeof cl->res, "bench/%s/%s%d", B->run_id,
                     cf.prefix, i);
            cl->res_id = (uint32_t)i;
        }
        rclOpen(cl);
    }
}

int wlRpcCycle(void)
{
    struct cycle_cfg c = {
        .prefix = "r",
        .timeout_ms = 10000,
        .slot_cycle = 0,
        .slot_acq = 1,
        .slot_rel = 2,
        .requeue_early = B->requeue_early,
    };
    B->op_names[0] = "cycle";
    B->op_names[1] = "acquire";
    B->op_names[2] = "release";
    cycleStartClients(&c);
    benchStartClock();
    return 0;
}

int wlContend(void)
{
    struct cycle_cfg c = {
        .one_resource = true,
        .prefix = "contend",
        .wait_ms = B->wait_ms,
        .hold_ms = B->hold_ms,
        .timeout_ms = B->wait_ms + 10000,
        .slot_cycle = -1,
        .slot_acq = 0,
        .slot_rel = 1,
        .requeue_early = B->requeue_early,
    };
    B->op_names[0] = "hand-off";
    B->op_names[1] = "release";
    benchExtra("(hand-off: one grant of the contended lock; its latency is "
               "the wait in the server's queue, send to grant)\n");
    cycleStartClients(&c);
    benchStartClock();
    return 0;
}

/* ----------------------------------------------------------- HTTP client */

struct hcl
{
    int idx;
    struct hconn h;
    uv_timer_t timer;
    void (*later)(struct hcl *cl);
    char path[BENCH_RES_MAX + 16];
    char body[96];
    uint64_t token;
    size_t grant;
    uint64_t t_cycle;
    uint64_t t_put;
    uint64_t t_del;
    uint64_t t_del_first;
    uint64_t safe_until;
    int del_tries;
    bool finished;
};

static struct hcl *hcls;

static void hclNext(struct hcl *cl);
static void hclDelete(struct hcl *cl);

static void hclTimerCb(uv_timer_t *t)
{
    struct hcl *cl = t->data;
    cl->later(cl);
}

static void hclLater(struct hcl *cl, void (*fn)(struct hcl *), uint64_t ms)
{
    cl->later = fn;
    uv_timer_start(&cl->timer, hclTimerCb, ms, 0);
}

static void hclEndGrant(struct hcl *cl)
{
    uint64_t end = cl->t_del_first < cl->safe_until ? cl->t_del_first
                                                    : cl->safe_until;
    grantsEnd(&B->grants, cl->grant, end);
}

static void delDone(struct hconn *h, int status)
{
    struct hcl *cl = h->data;
    uint64_t now = nowNs();
    if (status == 204 || status == 200) {
        hclEndGrant(cl);
        benchOp(2, cl->t_del, now);
        benchOp(0, cl->t_cycle, now);
        hclNext(cl);
        return;
    }
    benchHttpError(status);
    if ((status < 0 || status >= 500) && ++cl->del_tries < 5) {
        hclLater(cl, hclDelete, 10);
        return;
    }
    hclEndGrant(cl);
    hclLater(cl, hclNext, 10);
}

static void hclDelete(struct hcl *cl)
{
    char extra[64];
    snprintf(extra, sizeof extra, "If-Match: \"%" PRIu64 "\"\r\n", cl->token);
    cl->t_del = nowNs();
    if (cl->t_del_first == 0) {
        cl->t_del_first = cl->t_del;
    }
    hconnRequest(&cl->h, "DELETE", cl->path, extra, NULL, delDone);
}

static void putDone(struct hconn *h, int status)
{
    struct hcl *cl = h->data;
    uint64_t now = nowNs();
    if ((status == 201 || status == 200) && h->have_etag) {
        uint32_t ttl = B->ttl_ms;
        const char *p = strstr(h->body, "\"ttl_ms\":");
        if (p != NULL && atoi(p + 9) > 0) {
            ttl = (uint32_t)atoi(p + 9);
        }
        cl->token = h->etag;
        cl->safe_until = safeUntil(cl->t_put, ttl);
        cl->grant = grantsAdd(&B->grants, (uint32_t)cl->idx, (uint32_t)cl->idx,
                              cl->token, now);
        benchOp(1, cl->t_put, now);
        cl->del_tries = 0;
        cl->t_del_first = 0;
        hclDelete(cl);
        return;
    }
    benchHttpError(status);
    if (status >= 400 && B->http_status[status] <= 3) {
        fprintf(stderr, "tnbench: PUT %s: %d %s\n", cl->path, status, h->body);
    }
    hclLater(cl, hclNext, 10);
}

static void hclNext(struct hcl *cl)
{
    if (B->stopping) {
        if (!cl->finished) {
            cl->finished = true;
            benchClientDone();
        }
        return;
    }
    cl->t_cycle = cl->t_put = nowNs();
    hconnRequest(&cl->h, "PUT", cl->path, NULL, cl->body, putDone);
}

int wlHttpCycle(void)
{
    hcls = calloc((size_t)B->clients, sizeof *hcls);
    if (hcls == NULL) {
        fprintf(stderr, "tnbench: out of memory\n");
        return 3;
    }
    B->op_names[0] = "cycle";
    B->op_names[1] = "PUT";
    B->op_names[2] = "DELETE";
    for (int i = 0; i < B->clients; i++) {
        struct hcl *cl = &hcls[i];
        const char *addr = B->target_http;
        if (B->forward) {
            addr = B->http_eps[i % B->n_http];
        }
        cl->idx = i;
        hconnInit(&cl->h, addr);
        cl->h.data = cl;
        uv_timer_init(B->loop, &cl->timer);
        cl->timer.data = cl;
        snprintf(cl->path, sizeof cl->path, "/v1/locks/bench/%s/h%d",
                 B->run_id, i);
        snprintf(cl->body, sizeof cl->body, "{\"holder\":\"c%d\",\"ttl_ms\":%u}",
                 i, B->ttl_ms);
    }
    benchStartClock();
    for (int i = 0; i < B->clients; i++) {
        hclNext(&hcls[i]);
    }
    return 0;
}
