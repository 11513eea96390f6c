/* State-machine helpers of the fuzz harnesses (see fsm_util.h). */
#include "fsm_util.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

uint64_t fuzzFnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

void fuzzBatchInit(Tn__Batch *b, Tn__Command **cmds, size_t n, uint64_t now_ms)
{
    tn__batch__init(b);
    b->version = 1;
    b->term = 1;
    b->now_ms = now_ms;
    b->proposer = 1;
    b->n_commands = n;
    b->commands = cmds;
}

/* ----------------------------------------------------------- invariants */

struct checkState
{
    const struct fsm *f;
    char prev[FSM_RESOURCE_MAX + 1];
    size_t prev_len;
    bool have_prev;
    size_t n_locks;
};

static int lockCheckCb(void *data, const struct fsm_lock_view *v)
{
    struct checkState *st = data;
    const char *why = NULL;

    st->n_locks++;
    FUZZ_CHECK(v->resource_len >= 1 && v->resource_len <= FSM_RESOURCE_MAX,
               "resource length %zu", v->resource_len);
    FUZZ_CHECK(fsmResourceValid(v->resource, v->resource_len, &why),
               "the table holds an invalid resource (%s)", why);
    if (st->have_prev) {
        size_t m = st->prev_len < v->resource_len ? st->prev_len
                                                  : v->resource_len;
        int c = memcmp(st->prev, v->resource, m);
        FUZZ_CHECK(c < 0 || (c == 0 && st->prev_len < v->resource_len),
                   "resources out of order");
    }
    memcpy(st->prev, v->resource, v->resource_len);
    st->prev_len = v->resource_len;
    st->have_prev = true;

    switch (v->mode) {
    case TN__LOCK_MODE__EXCLUSIVE:
        FUZZ_CHECK(v->n_holders <= 1, "exclusive lock with %u holders",
                   v->n_holders);
        break;
    case TN__LOCK_MODE__SHARED:
        break;
    case TN__LOCK_MODE__SEMAPHORE:
        FUZZ_CHECK(v->permits >= 1 && v->n_holders <= v->permits,
                   "semaphore of %u permits with %u holders", v->permits,
                   v->n_holders);
        break;
    default:
        FUZZ_CHECK(0, "lock mode %d", v->mode);
    }
    FUZZ_CHECK(v->n_holders > 0 || v->queue_len > 0 ||
                   v->lock_delay_until_ms > 0,
               "an idle lock is listed");
    for (uint32_t i = 0; i < v->n_holders; i++) {
        const struct fsm_holder_view *h = &v->holders[i];
        struct fsm_session_view s;
        FUZZ_CHECK(h->token != 0 && h->token <= v->last_token,
                   "holder token %llu, last token %llu",
                   (unsigned long long)h->token,
                   (unsigned long long)v->last_token);
        FUZZ_CHECK(i == 0 || v->holders[i - 1].token < h->token,
                   "holders out of token order");
        FUZZ_CHECK(fsmSessionGet(st->f, h->session, &s),
                   "holder of a session that does not exist");
        FUZZ_CHECK(s.n_locks > 0, "holder's session holds nothing");
    }
    return 0;
}

void fuzzFsmCheck(const struct fsm *f)
{
    struct checkState *st = calloc(1, sizeof *st);

    FUZZ_CHECK(st != NULL, "out of memory");
    st->f = f;
    fsmLockForEach(f, "", 0, lockCheckCb, st);
    free(st);
}

void fuzzFsmApply(struct fsm *f,
                  uint64_t index,
                  const Tn__Batch *b,
                  struct fsm_result *results)
{
    fsmApply(f, index, b, results);
    FUZZ_CHECK(fsmIndex(f) == index, "index %llu after applying %llu",
               (unsigned long long)fsmIndex(f), (unsigned long long)index);
    fuzzFsmCheck(f);
}

/* -------------------------------------------------------- round trip */

void fuzzSnapshotRoundTrip(const struct fsm *f, void **snap, size_t *len)
{
    struct fsm_config fc;
    struct fsm g;
    void *a = NULL;
    void *b = NULL;
    size_t alen = 0;
    size_t blen = 0;
    int rv;

    FUZZ_CHECK(fsmSnapshot(f, &a, &alen) == 0, "snapshot failed");
    fsmConfigDefaults(&fc);
    fc = f->config;
    FUZZ_CHECK(fsmInit(&g, &fc) == 0, "fsmInit failed");
    rv = fsmRestore(&g, a, alen);
    FUZZ_CHECK(rv == 0, "a snapshot of a live table does not restore (%d)",
               rv);
    FUZZ_CHECK(fsmIndex(&g) == fsmIndex(f) && fsmNow(&g) == fsmNow(f) &&
                   fsmTerm(&g) == fsmTerm(f),
               "index, time or term changed by snapshot + restore");
    FUZZ_CHECK(fsmNextDeadline(&g) == fsmNextDeadline(f),
               "next deadline changed by snapshot + restore");
    FUZZ_CHECK(fsmSnapshot(&g, &b, &blen) == 0, "snapshot failed");
    FUZZ_CHECK(alen == blen && memcmp(a, b, alen) == 0,
               "snapshot -> restore -> snapshot is not byte-identical "
               "(%zu vs %zu bytes)", alen, blen);
    fuzzFsmCheck(&g);
    free(b);
    fsmClose(&g);
    if (snap != NULL) {
        *snap = a;
        *len = alen;
    } else {
        free(a);
    }
}

/* ------------------------------------------------------------- setup */

static void setupApply(struct fsm *f,
                       struct fuzz_world *w,
                       Tn__Command **cmds,
                       size_t n,
                       struct fsm_result *res)
{
    Tn__Batch b;

    w->index++;
    w->now_ms = w->index == 1 ? FUZZ_T0 : w->now_ms + 1000;
    fuzzBatchInit(&b, cmds, n, w->now_ms);
    fsmApply(f, w->index, &b, res);
}

void fuzzFsmSetup(struct fsm *f, struct fuzz_world *w)
{
    struct fsm_config fc;
    struct fsm_result res[6];
    Tn__Command c[6];
    Tn__Command *cp[6];
    Tn__MemberInfo mi = TN__MEMBER_INFO__INIT;
    Tn__SessionOpen so_a = TN__SESSION_OPEN__INIT;
    Tn__SessionOpen so_b = TN__SESSION_OPEN__INIT;
    Tn__Acquire a1 = TN__ACQUIRE__INIT;
    Tn__Acquire a2 = TN__ACQUIRE__INIT;
    Tn__Acquire a3 = TN__ACQUIRE__INIT;
    Tn__Acquire a4 = TN__ACQUIRE__INIT;
    Tn__Acquire a5 = TN__ACQUIRE__INIT;
    Tn__Acquire a6 = TN__ACQUIRE__INIT;
    Tn__Release r1 = TN__RELEASE__INIT;

    memset(w, 0, sizeof *w);
    fsmConfigDefaults(&fc);
    FUZZ_CHECK(fsmInit(f, &fc) == 0, "fsmInit failed");
    for (int i = 0; i < 6; i++) {
        tn__command__init(&c[i]);
        cp[i] = &c[i];
    }

    /* 1: a member and two sessions. */
    mi.id = 1;
    mi.raft_address = (char *)"127.0.0.1:7101";
    mi.rpc_address = (char *)"127.0.0.1:7201";
    mi.http_address = (char *)"127.0.0.1:7301";
    c[0].body_case = TN__COMMAND__BODY_MEMBER;
    c[0].member = &mi;
    so_a.holder = (char *)"alice";
    so_a.ttl_ms = 10000;
    c[1].body_case = TN__COMMAND__BODY_SESSION_OPEN;
    c[1].session_open = &so_a;
    so_b.holder = (char *)"bob";
    so_b.ttl_ms = 5000;
    c[2].body_case = TN__COMMAND__BODY_SESSION_OPEN;
    c[2].session_open = &so_b;
    setupApply(f, w, cp, 3, res);
    FUZZ_CHECK(res[0].status == 0 && res[1].status == 0 && res[2].status == 0,
               "setup 1: %d %d %d", res[0].status, res[1].status,
               res[2].status);
    w->alice = res[1].session;
    w->bob = res[2].session;

    /* 2: grants. */
    for (int i = 0; i < 6; i++) {
        tn__command__init(&c[i]);
    }
    a1.session = w->alice;
    a1.resource = (char *)"orders/1";
    a1.lock_delay_ms = 2000;
    c[0].body_case = TN__COMMAND__BODY_ACQUIRE;
    c[0].acquire = &a1;
    a2.session = w->alice;
    a2.resource = (char *)"cfg";
    a2.mode = TN__LOCK_MODE__SHARED;
    c[1].body_case = TN__COMMAND__BODY_ACQUIRE;
    c[1].acquire = &a2;
    a3.session = w->bob;
    a3.resource = (char *)"cfg";
    a3.mode = TN__LOCK_MODE__SHARED;
    c[2].body_case = TN__COMMAND__BODY_ACQUIRE;
    c[2].acquire = &a3;
    a4.session = w->bob;
    a4.resource = (char *)"pool";
    a4.mode = TN__LOCK_MODE__SEMAPHORE;
    a4.permits = 3;
    c[3].body_case = TN__COMMAND__BODY_ACQUIRE;
    c[3].acquire = &a4;
    a5.session = 0;
    a5.holder = (char *)"carol";
    a5.ttl_ms = 3000;
    a5.resource = (char *)"eph/1";
    a5.lock_delay_ms = 1000;
    c[4].body_case = TN__COMMAND__BODY_ACQUIRE;
    c[4].acquire = &a5;
    a6.session = w->alice;
    a6.resource = (char *)"gone";
    c[5].body_case = TN__COMMAND__BODY_ACQUIRE;
    c[5].acquire = &a6;
    setupApply(f, w, cp, 6, res);
    for (int i = 0; i < 6; i++) {
        FUZZ_CHECK(res[i].status == 0 && !res[i].queued,
                   "setup 2, command %d: %d", i, res[i].status);
    }
    w->token_orders = res[0].token;
    w->token_cfg = res[1].token;
    w->token_pool = res[3].token;
    w->token_eph = res[4].token;
    w->eph_session = res[4].session;

    /* 3: bob queues for orders/1 (exactly-once client 42), alice releases
     * "gone" (a tombstone). */
    for (int i = 0; i < 2; i++) {
        tn__command__init(&c[i]);
    }
    a1 = (Tn__Acquire)TN__ACQUIRE__INIT;
    a1.session = w->bob;
    a1.resource = (char *)"orders/1";
    a1.wait_ms = 60000;
    c[0].client_id = 42;
    c[0].seq = 1;
    c[0].body_case = TN__COMMAND__BODY_ACQUIRE;
    c[0].acquire = &a1;
    r1.resource = (char *)"gone";
    r1.token = res[5].token;
    c[1].body_case = TN__COMMAND__BODY_RELEASE;
    c[1].release = &r1;
    setupApply(f, w, cp, 2, res);
    FUZZ_CHECK(res[0].status == 0 && res[0].queued, "setup 3: queue: %d",
               res[0].status);
    FUZZ_CHECK(res[1].status == 0, "setup 3: release: %d", res[1].status);
    fuzzFsmCheck(f);
}
