/* DESIGN §4 lease-safety rules that live in the replicated state machine,
 * checked on a deterministic 3-server cluster in virtual time
 * (raft/fixture.h) with the real FSM and entry codec behind the daemon's
 * raft_fsm glue (adapterFsmInit):
 *
 *   - a deposed leader's expiry entry is ignored: stamped with an older term,
 *     or naming an old epoch after a logged renewal (rule 2);
 *   - a request retried after a leader loss (same client_id, seq) is applied
 *     once and answered with the original result, and a retried release
 *     never touches a newer holder's lock;
 *   - the exactly-once window: replies kept per client id (64 by default),
 *     older sequence numbers refused, idle client ids forgotten after
 *     client_ttl_ms of cluster time;
 *   - fencing tokens stay strictly increasing across leader changes
 *     (crash and transfer) and snapshot installs;
 *   - a restart (the FSM restored from a snapshot through the glue, the
 *     rest of the log replayed) gives the same answers, byte-identical
 *     state and the same events as the replicas that never restarted.
 *
 * Every proposal is recorded per server through the adapter's `applied`
 * hook, and every replica must compute the same result for every command.
 * The rules that live in the leader's memory (keepalives, deadlines) are
 * tested with real daemons in tests/integration/test_lease_safety.c. */
#include "lib/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <raft.h>
#include <raft/fixture.h>

#include "command.h"
#include "fsm.h"
#include "raft_adapter.h"

#define N_SERVERS 3
#define MAX_CMDS 16  /* commands per proposed batch in these tests */
#define MAX_REQS 512 /* raft_apply requests per test */
#define MAX_EVENTS 256
#define BASE_MS 1700000000000ULL
#define STEP_MS 20000 /* bound of every wait, in virtual milliseconds */

/* ------------------------------------------------------------- records */

/* One command's result as a server computed it (strings copied). */
struct res
{
    struct fsm_result r; /* holder and message pointers cleared */
    char holder[64];
    char message[160];
};

/* One applied batch on one server. */
struct rec
{
    uint64_t index;
    uint64_t nonce;
    size_t n;
    struct res res[MAX_CMDS];
};

struct serverLog
{
    struct rec *recs;
    size_t n;
    size_t cap;
};

/* One FSM event (strings copied). */
struct ev
{
    int type;
    uint64_t index;
    uint64_t session;
    uint64_t epoch;
    uint32_t ttl_ms;
    uint64_t client_id;
    uint64_t seq;
    bool has_result;
    struct res result;
    char resource[64];
};

struct evLog
{
    struct ev ev[MAX_EVENTS];
    size_t n;
    bool on;
};

/* An entry this test proposed, kept to replay it after a "restart". */
struct sent
{
    uint64_t index;
    uint64_t nonce;
    void *bytes; /* malloc'ed copy of the encoded entry */
    size_t len;
};

struct fixture;

struct hookCtx
{
    struct fixture *f;
    unsigned i;
};

struct applyReq
{
    struct raft_apply req; /* must outlive its callback */
    struct fixture *f;
    bool done;
    int status;
};

struct fixture
{
    struct raft_fixture cluster;
    struct raft_fsm rfsm[N_SERVERS];
    struct adapter_fsm wrap[N_SERVERS];
    struct fsm fsm[N_SERVERS];
    struct hookCtx hctx[N_SERVERS];
    struct serverLog logs[N_SERVERS];
    struct evLog events[N_SERVERS + 1]; /* [N_SERVERS]: the restarted FSM */
    struct applyReq reqs[MAX_REQS];
    unsigned n_reqs;
    struct sent *sent;
    size_t n_sent;
    size_t cap_sent;
    uint64_t nonce;
    uint64_t skew_ms; /* added to the virtual clock when stamping batches */
    struct raft_transfer transfers[16]; /* each outlives its callback */
    unsigned n_transfers;
    bool isolated[N_SERVERS]; /* cut off: not expected to apply anything */
};

static void copyResult(struct res *dst, const struct fsm_result *src)
{
    memset(dst, 0, sizeof *dst);
    dst->r = *src;
    dst->r.holder = NULL;
    dst->r.message = NULL;
    if (src->holder != NULL) {
        snprintf(dst->holder, sizeof dst->holder, "%s", src->holder);
    }
    if (src->message != NULL) {
        snprintf(dst->message, sizeof dst->message, "%s", src->message);
    }
}

static bool sameRes(const struct res *a, const struct res *b)
{
    const struct fsm_result *x = &a->r;
    const struct fsm_result *y = &b->r;
    return x->status == y->status && x->replayed == y->replayed &&
           x->queued == y->queued && x->session == y->session &&
           x->epoch == y->epoch && x->ttl_ms == y->ttl_ms &&
           x->token == y->token && x->generation == y->generation &&
           x->mode == y->mode && x->holder_session == y->holder_session &&
           x->holder_token == y->holder_token &&
           x->acquired_at_ms == y->acquired_at_ms &&
           x->holder_ttl_ms == y->holder_ttl_ms &&
           x->queue_len == y->queue_len &&
           x->lock_delay_until_ms == y->lock_delay_until_ms &&
           strcmp(a->holder, b->holder) == 0 &&
           strcmp(a->message, b->message) == 0;
}

static const char *describe(const struct res *a)
{
    static char buf[512];
    const struct fsm_result *x = &a->r;
    snprintf(buf, sizeof buf,
             "status=%d replayed=%d queued=%d session=%llu epoch=%llu "
             "ttl=%u token=%llu gen=%llu mode=%d holder_session=%llu "
             "holder=\"%s\" holder_token=%llu queue=%u delay_until=%llu "
             "message=\"%s\"",
             x->status, x->replayed, x->queued,
             (unsigned long long)x->session, (unsigned long long)x->epoch,
             x->ttl_ms, (unsigned long long)x->token,
             (unsigned long long)x->generation, x->mode,
             (unsigned long long)x->holder_session, a->holder,
             (unsigned long long)x->holder_token, x->queue_len,
             (unsigned long long)x->lock_delay_until_ms, a->message);
    return buf;
}

static void appliedHook(void *data,
                        uint64_t index,
                        const Tn__Batch *batch,
                        const struct fsm_result *results)
{
    struct hookCtx *h = data;
    struct serverLog *log = &h->f->logs[h->i];
    struct rec *rec;

    if (log->n == log->cap) {
        size_t cap = log->cap ? log->cap * 2 : 64;
        struct rec *recs = realloc(log->recs, cap * sizeof *recs);
        assert_non_null(recs);
        log->recs = recs;
        log->cap = cap;
    }
    rec = &log->recs[log->n++];
    memset(rec, 0, sizeof *rec);
    rec->index = index;
    rec->nonce = batch->nonce;
    rec->n = batch->n_commands < MAX_CMDS ? batch->n_commands : MAX_CMDS;
    for (size_t k = 0; k < rec->n; k++) {
        copyResult(&rec->res[k], &results[k]);
    }
}

static void recordEvent(struct evLog *log, const struct fsm_event *e)
{
    struct ev *ev;
    if (!log->on) {
        return;
    }
    assert_true(log->n < MAX_EVENTS);
    ev = &log->ev[log->n++];
    memset(ev, 0, sizeof *ev);
    ev->type = (int)e->type;
    ev->index = e->index;
    ev->session = e->session;
    ev->epoch = e->epoch;
    ev->ttl_ms = e->ttl_ms;
    ev->client_id = e->client_id;
    ev->seq = e->seq;
    if (e->result != NULL) {
        ev->has_result = true;
        copyResult(&ev->result, e->result);
    }
    if (e->resource != NULL) {
        size_t n = e->resource_len < sizeof ev->resource - 1
                       ? e->resource_len
                       : sizeof ev->resource - 1;
        memcpy(ev->resource, e->resource, n);
    }
}

static void eventCb(void *data, const struct fsm_event *e)
{
    recordEvent(data, e);
}

static bool sameEvent(const struct ev *a, const struct ev *b)
{
    return a->type == b->type && a->index == b->index &&
           a->session == b->session && a->epoch == b->epoch &&
           a->ttl_ms == b->ttl_ms && a->client_id == b->client_id &&
           a->seq == b->seq && a->has_result == b->has_result &&
           (!a->has_result || sameRes(&a->result, &b->result)) &&
           strcmp(a->resource, b->resource) == 0;
}

/* ------------------------------------------------------------ fixture */

static int setUp(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    struct fsm_config fc;
    struct raft_configuration conf;

    assert_non_null(f);
    fsmConfigDefaults(&fc);
    assert_int_equal(raft_fixture_initialize(&f->cluster), 0);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        struct adapter_hooks hooks;
        assert_int_equal(fsmInit(&f->fsm[i], &fc), 0);
        f->fsm[i].data = &f->events[i];
        f->fsm[i].event_cb = eventCb;
        f->hctx[i].f = f;
        f->hctx[i].i = i;
        memset(&hooks, 0, sizeof hooks);
        hooks.data = &f->hctx[i];
        hooks.applied = appliedHook;
        adapterFsmInit(&f->wrap[i], &f->rfsm[i], &f->fsm[i], &hooks);
        assert_int_equal(raft_fixture_grow(&f->cluster, &f->rfsm[i]), 0);
        f->wrap[i].raft = raft_fixture_get(&f->cluster, i);
        raft_fixture_get(&f->cluster, i)->tracer = NULL;
        /* As in the daemon: a server that comes back does not disrupt a
         * healthy leader with a higher-term election. */
        raft_set_pre_vote(raft_fixture_get(&f->cluster, i), true);
    }
    assert_int_equal(raft_fixture_configuration(&f->cluster, N_SERVERS, &conf),
                     0);
    assert_int_equal(raft_fixture_bootstrap(&f->cluster, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&f->cluster), 0);
    *state = f;
    return 0;
}

static int tearDown(void **state)
{
    struct fixture *f = *state;
    raft_fixture_close(&f->cluster);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        fsmClose(&f->fsm[i]);
        free(f->logs[i].recs);
    }
    for (size_t k = 0; k < f->n_sent; k++) {
        free(f->sent[k].bytes);
    }
    free(f->sent);
    free(f);
    return 0;
}

static struct raft *srv(struct fixture *f, unsigned i)
{
    return raft_fixture_get(&f->cluster, i);
}

/* The live server in leader state with the highest term, or N_SERVERS. (A
 * deposed leader may still believe it leads in an older term.) */
static unsigned liveLeader(struct fixture *f)
{
    unsigned best = N_SERVERS;
    for (unsigned i = 0; i < N_SERVERS; i++) {
        if (raft_fixture_alive(&f->cluster, i) &&
            raft_state(srv(f, i)) == RAFT_LEADER &&
            (best == N_SERVERS ||
             raft_current_term(srv(f, i)) > raft_current_term(srv(f, best)))) {
            best = i;
        }
    }
    return best;
}

static bool otherLeaderCb(struct raft_fixture *c, void *arg)
{
    unsigned old = *(unsigned *)arg;
    for (unsigned i = 0; i < N_SERVERS; i++) {
        if (i != old && raft_fixture_alive(c, i) &&
            raft_state(raft_fixture_get(c, i)) == RAFT_LEADER) {
            return true;
        }
    }
    return false;
}

/* Step until a live server other than @old leads; returns it. */
static unsigned waitOtherLeader(struct fixture *f, unsigned old)
{
    unsigned l;
    assert_true(
        raft_fixture_step_until(&f->cluster, otherLeaderCb, &old, STEP_MS));
    l = liveLeader(f);
    assert_true(l < N_SERVERS);
    assert_int_not_equal(l, old);
    return l;
}

static void applyCb(struct raft_apply *req, int status, void *result)
{
    struct applyReq *a = req->data;
    (void)result;
    a->done = true;
    a->status = status;
}

/* Cluster time stamped into the next batch: the virtual clock (plus the
 * skew a test adds to make time pass without stepping). */
static uint64_t stampNow(struct fixture *f)
{
    return BASE_MS + raft_fixture_time(&f->cluster) + f->skew_ms;
}

/* Encode a batch of @n commands stamped with @term (0: the proposing
 * server's current term) and append it on server @via with raft_apply,
 * without stepping. Returns the request record; its entry index and batch
 * nonce are stored in *@index and *@nonce. */
static struct applyReq *submit(struct fixture *f,
                               unsigned via,
                               uint64_t term,
                               Tn__Command **cmds,
                               size_t n,
                               uint64_t *index,
                               uint64_t *nonce)
{
    struct raft *r = srv(f, via);
    Tn__Batch batch = TN__BATCH__INIT;
    struct raft_buffer buf;
    struct applyReq *a;
    struct sent *s;

    assert_true(n <= MAX_CMDS);
    assert_true(f->n_reqs < MAX_REQS);
    a = &f->reqs[f->n_reqs++];
    a->f = f;
    a->done = false;
    a->req.data = a;
    batch.version = 1;
    batch.term = term != 0 ? term : raft_current_term(r);
    batch.now_ms = stampNow(f);
    batch.proposer = via + 1;
    batch.nonce = ++f->nonce;
    batch.n_commands = n;
    batch.commands = cmds;
    assert_int_equal(commandEncode(&batch, raft_malloc, &buf.base, &buf.len),
                     0);
    assert_int_equal(buf.len % 8, 0);

    if (f->n_sent == f->cap_sent) {
        size_t cap = f->cap_sent ? f->cap_sent * 2 : 32;
        struct sent *p = realloc(f->sent, cap * sizeof *p);
        assert_non_null(p);
        f->sent = p;
        f->cap_sent = cap;
    }
    s = &f->sent[f->n_sent++];
    s->nonce = batch.nonce;
    s->len = buf.len;
    s->bytes = malloc(buf.len);
    assert_non_null(s->bytes);
    memcpy(s->bytes, buf.base, buf.len);

    assert_int_equal(raft_apply(r, &a->req, &buf, 1, applyCb), 0);
    s->index = raft_last_index(r);
    if (index != NULL) {
        *index = s->index;
    }
    if (nonce != NULL) {
        *nonce = batch.nonce;
    }
    return a;
}

/* The record of batch @nonce as applied by server @i, or NULL. */
static const struct rec *recOf(struct fixture *f, unsigned i, uint64_t nonce)
{
    for (size_t k = 0; k < f->logs[i].n; k++) {
        if (f->logs[i].recs[k].nonce == nonce) {
            return &f->logs[i].recs[k];
        }
    }
    return NULL;
}

/* Every live server applied batch @nonce with identical results; returns
 * the record of server @i. */
static const struct rec *agreedRec(struct fixture *f,
                                   unsigned i,
                                   uint64_t nonce)
{
    const struct rec *ref = recOf(f, i, nonce);
    assert_non_null(ref);
    for (unsigned j = 0; j < N_SERVERS; j++) {
        const struct rec *other;
        if (j == i || !raft_fixture_alive(&f->cluster, j) ||
            f->isolated[j]) {
            continue;
        }
        other = recOf(f, j, nonce);
        if (other == NULL) {
            fail_msg("server %u did not apply batch %llu", j,
                     (unsigned long long)nonce);
        }
        assert_int_equal(other->index, ref->index);
        assert_int_equal(other->n, ref->n);
        for (size_t k = 0; k < ref->n; k++) {
            if (!sameRes(&other->res[k], &ref->res[k])) {
                fail_msg("batch %llu command %zu: server %u: %s", 
                         (unsigned long long)nonce, k, i,
                         describe(&ref->res[k]));
            }
        }
    }
    return ref;
}

/* Step until every live server applied @index. */
static void waitApplied(struct fixture *f, uint64_t index)
{
    for (unsigned i = 0; i < N_SERVERS; i++) {
        if (raft_fixture_alive(&f->cluster, i) && !f->isolated[i] &&
            !raft_fixture_step_until_applied(&f->cluster, i, index,
                                             STEP_MS)) {
            fail_msg("server %u did not apply index %llu (applied %llu)", i,
                     (unsigned long long)index,
                     (unsigned long long)raft_last_applied(srv(f, i)));
        }
    }
}

/* Propose @n commands through the live leader, stamped with @term (0: its
 * own), wait until every live server applied them, check that all computed
 * the same results, and return the leader's record. */
static const struct rec *proposeN(struct fixture *f,
                                  uint64_t term,
                                  Tn__Command **cmds,
                                  size_t n)
{
    unsigned leader = liveLeader(f);
    uint64_t index;
    uint64_t nonce;
    struct applyReq *a;

    if (leader == N_SERVERS) {
        assert_true(raft_fixture_step_until_has_leader(&f->cluster, STEP_MS));
        leader = liveLeader(f);
    }
    assert_true(leader < N_SERVERS);
    a = submit(f, leader, term, cmds, n, &index, &nonce);
    waitApplied(f, index);
    assert_true(a->done);
    assert_int_equal(a->status, 0);
    return agreedRec(f, leader, nonce);
}

/* One command through the leader; returns its result. */
static struct res propose1(struct fixture *f, Tn__Command *cmd)
{
    Tn__Command *cmds[1] = { cmd };
    return proposeN(f, 0, cmds, 1)->res[0];
}

/* Same, stamped with @term instead of the leader's own. */
static struct res proposeStamped(struct fixture *f,
                                 uint64_t term,
                                 Tn__Command *cmd)
{
    Tn__Command *cmds[1] = { cmd };
    return proposeN(f, term, cmds, 1)->res[0];
}

/* ---------------------------------------------------------- commands */

struct cmd
{
    Tn__Command c;
    Tn__SessionOpen open;
    Tn__SessionKeepalive keepalive;
    Tn__SessionClose close;
    Tn__Acquire acquire;
    Tn__Release release;
    Tn__Renew renew;
    Tn__SessionExpire expire;
    Tn__Tick tick;
};

static Tn__Command *cmdInit(struct cmd *m)
{
    memset(m, 0, sizeof *m);
    tn__command__init(&m->c);
    return &m->c;
}

static Tn__Command *mkOpen(struct cmd *m, const char *holder, uint32_t ttl)
{
    Tn__Command *c = cmdInit(m);
    tn__session_open__init(&m->open);
    m->open.holder = (char *)holder;
    m->open.ttl_ms = ttl;
    c->body_case = TN__COMMAND__BODY_SESSION_OPEN;
    c->session_open = &m->open;
    return c;
}

static Tn__Command *mkKeepalive(struct cmd *m, uint64_t session)
{
    Tn__Command *c = cmdInit(m);
    tn__session_keepalive__init(&m->keepalive);
    m->keepalive.session = session;
    c->body_case = TN__COMMAND__BODY_KEEPALIVE;
    c->keepalive = &m->keepalive;
    return c;
}

static Tn__Command *mkAcquire(struct cmd *m,
                              uint64_t session,
                              const char *resource,
                              int mode,
                              uint32_t permits,
                              uint32_t wait_ms,
                              uint32_t lock_delay_ms)
{
    Tn__Command *c = cmdInit(m);
    tn__acquire__init(&m->acquire);
    m->acquire.session = session;
    m->acquire.resource = (char *)resource;
    m->acquire.mode = (Tn__LockMode)mode;
    m->acquire.permits = permits;
    m->acquire.wait_ms = wait_ms;
    m->acquire.lock_delay_ms = lock_delay_ms;
    c->body_case = TN__COMMAND__BODY_ACQUIRE;
    c->acquire = &m->acquire;
    return c;
}

static Tn__Command *mkExclusive(struct cmd *m,
                                uint64_t session,
                                const char *resource)
{
    return mkAcquire(m, session, resource, TN__LOCK_MODE__EXCLUSIVE, 0, 0, 0);
}

static Tn__Command *mkRelease(struct cmd *m,
                              const char *resource,
                              uint64_t token)
{
    Tn__Command *c = cmdInit(m);
    tn__release__init(&m->release);
    m->release.resource = (char *)resource;
    m->release.token = token;
    c->body_case = TN__COMMAND__BODY_RELEASE;
    c->release = &m->release;
    return c;
}

static Tn__Command *mkRenew(struct cmd *m,
                            const char *resource,
                            uint64_t token,
                            uint32_t ttl)
{
    Tn__Command *c = cmdInit(m);
    tn__renew__init(&m->renew);
    m->renew.resource = (char *)resource;
    m->renew.token = token;
    m->renew.ttl_ms = ttl;
    c->body_case = TN__COMMAND__BODY_RENEW;
    c->renew = &m->renew;
    return c;
}

static Tn__Command *mkExpire(struct cmd *m, uint64_t session, uint64_t epoch)
{
    Tn__Command *c = cmdInit(m);
    tn__session_expire__init(&m->expire);
    m->expire.session = session;
    m->expire.epoch = epoch;
    c->body_case = TN__COMMAND__BODY_SESSION_EXPIRE;
    c->session_expire = &m->expire;
    return c;
}

static Tn__Command *mkTick(struct cmd *m)
{
    Tn__Command *c = cmdInit(m);
    tn__tick__init(&m->tick);
    c->body_case = TN__COMMAND__BODY_TICK;
    c->tick = &m->tick;
    return c;
}

/* Give @c an exactly-once identity. */
static Tn__Command *once(Tn__Command *c, uint64_t client_id, uint64_t seq)
{
    c->client_id = client_id;
    c->seq = seq;
    return c;
}

/* ------------------------------------------------------------ checks */

static uint64_t openSession(struct fixture *f, const char *holder, uint32_t ttl)
{
    struct cmd m;
    struct res r = propose1(f, mkOpen(&m, holder, ttl));
    assert_int_equal(r.r.status, TN__STATUS__OK);
    assert_int_equal(r.r.epoch, 1);
    return r.r.session;
}

static uint64_t grant(struct fixture *f, uint64_t session, const char *res)
{
    struct cmd m;
    struct res r = propose1(f, mkExclusive(&m, session, res));
    if (r.r.status != TN__STATUS__OK || r.r.queued || r.r.replayed) {
        fail_msg("acquire %s: %s", res, describe(&r));
    }
    return r.r.token;
}

static void expectStatus(const struct res *r, int status, const char *what)
{
    if (r->r.status != status) {
        fail_msg("%s: want status %d, got %s", what, status, describe(r));
    }
}

/* Tokens held on @res by server @i, in grant order (0 if free). */
static uint64_t heldToken(struct fixture *f, unsigned i, const char *res)
{
    struct fsm_lock_view v;
    if (!fsmLockGet(&f->fsm[i], res, strlen(res), &v) || v.n_holders == 0) {
        return 0;
    }
    return v.holders[0].token;
}

/* Every live server has session @id alive with @epoch (0: expect it gone). */
static void expectSession(struct fixture *f, uint64_t id, uint64_t epoch)
{
    for (unsigned i = 0; i < N_SERVERS; i++) {
        struct fsm_session_view v;
        bool found;
        if (!raft_fixture_alive(&f->cluster, i) || f->isolated[i]) {
            continue;
        }
        found = fsmSessionGet(&f->fsm[i], id, &v);
        if (epoch == 0) {
            if (found) {
                fail_msg("server %u: session %llu still alive (epoch %llu)",
                         i, (unsigned long long)id,
                         (unsigned long long)v.epoch);
            }
        } else {
            if (!found) {
                fail_msg("server %u: session %llu is gone", i,
                         (unsigned long long)id);
            }
            assert_int_equal(v.epoch, epoch);
        }
    }
}

static void expectHeld(struct fixture *f, const char *res, uint64_t token)
{
    for (unsigned i = 0; i < N_SERVERS; i++) {
        if (raft_fixture_alive(&f->cluster, i) && !f->isolated[i] &&
            heldToken(f, i, res) != token) {
            fail_msg("server %u: %s held with token %llu, want %llu", i, res,
                     (unsigned long long)heldToken(f, i, res),
                     (unsigned long long)token);
        }
    }
}

static void snapshotOf(struct fsm *fsm, void **buf, size_t *len)
{
    assert_int_equal(fsmSnapshot(fsm, buf, len), 0);
}

static bool sameState(struct fsm *a, struct fsm *b)
{
    void *ba;
    void *bb;
    size_t la;
    size_t lb;
    bool same;
    snapshotOf(a, &ba, &la);
    snapshotOf(b, &bb, &lb);
    same = la == lb && memcmp(ba, bb, la) == 0;
    free(ba);
    free(bb);
    return same;
}

/* Bring every server back, let all catch up with the leader, and check
 * that the replicas are byte-identical. */
static void converge(struct fixture *f)
{
    unsigned leader;
    struct cmd m;
    for (unsigned i = 0; i < N_SERVERS; i++) {
        f->isolated[i] = false;
        if (!raft_fixture_alive(&f->cluster, i)) {
            raft_fixture_revive(&f->cluster, i);
        }
        for (unsigned j = 0; j < N_SERVERS; j++) {
            if (i != j) {
                raft_fixture_reconnect(&f->cluster, i, j);
                raft_fixture_desaturate(&f->cluster, i, j);
            }
        }
    }
    /* A fresh entry of the current leader's term commits everything. */
    leader = liveLeader(f);
    assert_true(leader < N_SERVERS);
    propose1(f, mkTick(&m));
    leader = liveLeader(f);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        assert_int_equal(fsmIndex(&f->fsm[i]), fsmIndex(&f->fsm[leader]));
        if (!sameState(&f->fsm[i], &f->fsm[leader])) {
            fail_msg("server %u differs from the leader %u", i, leader);
        }
    }
}

/* Stop acknowledgements to @leader (it can replicate but never learns that
 * a majority has its entries, so it commits nothing new). */
static void cutAcks(struct fixture *f, unsigned leader)
{
    for (unsigned j = 0; j < N_SERVERS; j++) {
        if (j != leader) {
            raft_fixture_saturate(&f->cluster, j, leader);
        }
    }
}

static void restoreAcks(struct fixture *f, unsigned leader)
{
    for (unsigned j = 0; j < N_SERVERS; j++) {
        if (j != leader) {
            raft_fixture_desaturate(&f->cluster, j, leader);
        }
    }
}

struct hasEntries
{
    unsigned from;
    uint64_t index;
};

static bool followersHaveCb(struct raft_fixture *c, void *arg)
{
    const struct hasEntries *h = arg;
    for (unsigned j = 0; j < N_SERVERS; j++) {
        if (j != h->from && raft_fixture_alive(c, j) &&
            raft_last_index(raft_fixture_get(c, j)) < h->index) {
            return false;
        }
    }
    return true;
}

/* Step until every other live server has the entries of @from's log (up
 * to its last index) in its own log. */
static void deliverAll(struct fixture *f, unsigned from)
{
    struct hasEntries h = { from, raft_last_index(srv(f, from)) };
    assert_true(
        raft_fixture_step_until(&f->cluster, followersHaveCb, &h, STEP_MS));
}

/* Cut server @i off from the others, both ways. */
static void isolate(struct fixture *f, unsigned i)
{
    for (unsigned j = 0; j < N_SERVERS; j++) {
        if (j != i) {
            raft_fixture_disconnect(&f->cluster, i, j);
            raft_fixture_disconnect(&f->cluster, j, i);
        }
    }
    f->isolated[i] = true;
}

/* ============================================================ scenarios */

/* Rule 2, a deposed leader: leader 0 is cut off and, still believing it
 * leads, proposes an expiry of session S naming epoch 1 in its term. A new
 * leader is elected and logs a renewal of S (epoch 2). When the partition
 * heals, the deposed entry is discarded by Raft and never applied. Then the
 * state machine's own guard, through the log: an expiry stamped with the
 * deposed term is ignored even when it names the current epoch, and an
 * expiry from the current term naming the epoch from before the logged
 * renewal is ignored; both answer with the current epoch and TTL (so a
 * leader can re-arm) and change nothing. The positive control (current
 * term, current epoch) does expire the session. */
static void test_deposed_leader_expiry_ignored(void **state)
{
    struct fixture *f = *state;
    struct cmd m;
    struct res r;
    uint64_t s;
    uint64_t t;
    uint64_t term1;
    uint64_t term2;
    uint64_t idx;
    uint64_t nonce;
    unsigned leader;
    struct applyReq *deposed;
    Tn__Command *cmds[1];

    raft_fixture_elect(&f->cluster, 0);
    term1 = raft_current_term(srv(f, 0));
    s = openSession(f, "worker-1", 10000);
    t = grant(f, s, "orders/1");

    /* Leader 0 is cut off from both followers. */
    isolate(f, 0);
    assert_int_equal(raft_state(srv(f, 0)), RAFT_LEADER);
    cmds[0] = mkExpire(&m, s, 1);
    deposed = submit(f, 0, 0, cmds, 1, &idx, &nonce);

    leader = waitOtherLeader(f, 0);
    term2 = raft_current_term(srv(f, leader));
    assert_true(term2 > term1);
    r = propose1(f, mkRenew(&m, "orders/1", t, 0));
    expectStatus(&r, TN__STATUS__OK, "logged renewal on the new leader");
    assert_int_equal(r.r.epoch, 2);
    assert_int_equal(r.r.token, t);

    /* Heal: the deposed leader's entry is overwritten, never applied. */
    converge(f);
    assert_true(deposed->done);
    assert_int_not_equal(deposed->status, 0);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        assert_null(recOf(f, i, nonce));
    }
    expectSession(f, s, 2);
    expectHeld(f, "orders/1", t);

    /* Stamped with the deposed term, naming the current epoch. */
    r = proposeStamped(f, term1, mkExpire(&m, s, 2));
    expectStatus(&r, TN__STATUS__INVALID_ARGUMENT, "expiry with an old term");
    assert_non_null(strstr(r.message, "term"));
    assert_int_equal(r.r.session, s);
    assert_int_equal(r.r.epoch, 2);
    assert_int_equal(r.r.ttl_ms, 10000);
    expectSession(f, s, 2);
    expectHeld(f, "orders/1", t);

    /* The current term, naming the epoch before the logged renewal. */
    r = propose1(f, mkExpire(&m, s, 1));
    expectStatus(&r, TN__STATUS__INVALID_ARGUMENT, "expiry of an old epoch");
    assert_non_null(strstr(r.message, "epoch"));
    assert_int_equal(r.r.epoch, 2);
    expectSession(f, s, 2);
    expectHeld(f, "orders/1", t);

    /* Positive control: the current epoch in the current term expires it;
     * the lock is freed by expiry and its token says so afterwards. */
    r = propose1(f, mkExpire(&m, s, 2));
    expectStatus(&r, TN__STATUS__OK, "expiry of the current epoch");
    expectSession(f, s, 0);
    expectHeld(f, "orders/1", 0);
    r = propose1(f, mkRelease(&m, "orders/1", t));
    expectStatus(&r, TN__STATUS__LEASE_EXPIRED, "release after the expiry");
    r = proposeStamped(f, term1, mkExpire(&m, s, 2));
    expectStatus(&r, TN__STATUS__SESSION_EXPIRED, "expiry of a gone session");
    converge(f);
}

/* Rule 2, pipelining across a leader loss: leader 0 appends a client's
 * logged renewal and, right behind it, an expiry naming the epoch it knew
 * before that renewal was applied. Both reach the followers but no
 * acknowledgement reaches 0, which then crashes. The new leader commits
 * both: the renewal applies first (epoch 2), so the expiry is ignored and
 * the lock stays held. */
static void test_expiry_behind_renewal_after_leader_loss(void **state)
{
    struct fixture *f = *state;
    struct cmd m1;
    struct cmd m2;
    struct cmd m;
    struct res r;
    Tn__Command *cmds[1];
    uint64_t s;
    uint64_t t;
    uint64_t n_renew;
    uint64_t n_expire;
    unsigned leader;
    const struct rec *rec;

    raft_fixture_elect(&f->cluster, 0);
    s = openSession(f, "worker-2", 10000);
    t = grant(f, s, "orders/2");

    cutAcks(f, 0);
    cmds[0] = mkRenew(&m1, "orders/2", t, 0);
    submit(f, 0, 0, cmds, 1, NULL, &n_renew);
    cmds[0] = mkExpire(&m2, s, 1);
    submit(f, 0, 0, cmds, 1, NULL, &n_expire);
    deliverAll(f, 0);
    raft_fixture_kill(&f->cluster, 0);
    restoreAcks(f, 0);

    leader = waitOtherLeader(f, 0);
    /* The new leader's first entry commits the old ones before it. */
    propose1(f, mkTick(&m));
    rec = agreedRec(f, leader, n_renew);
    expectStatus(&rec->res[0], TN__STATUS__OK, "renewal from the old leader");
    assert_int_equal(rec->res[0].r.epoch, 2);
    rec = agreedRec(f, leader, n_expire);
    expectStatus(&rec->res[0], TN__STATUS__INVALID_ARGUMENT,
                 "expiry behind the renewal");
    assert_non_null(strstr(rec->res[0].message, "epoch"));
    assert_int_equal(rec->res[0].r.epoch, 2);
    expectSession(f, s, 2);
    expectHeld(f, "orders/2", t);

    r = propose1(f, mkRenew(&m, "orders/2", t, 0));
    expectStatus(&r, TN__STATUS__OK, "renewal after the failover");
    assert_int_equal(r.r.epoch, 3);
    converge(f);
    expectSession(f, s, 3);
}

/* Exactly-once across leader losses, both sides of COMMIT_UNKNOWN:
 *  1. a session open (client C, seq 2) and an acquire (C, 3) replicated by
 *     leader A, which crashes before anyone learns the outcome, are
 *     committed by the next leader; the client's retries through that
 *     leader return the original answers (the same session, not a second
 *     one; OK with the same token and generation, replayed) and nothing is
 *     granted twice;
 *  2. a release (C, 4) replicated by leader B, which crashes; a newer
 *     session takes the lock; the client's retry of the release returns the
 *     original OK (replayed) and the newer holder's lock is untouched; so is
 *     it by a retry without the exactly-once id (answered from the
 *     tombstone), and by a late retry of the acquire (C, 3), which still
 *     gets its original answer;
 *  3. an acquire (C, 5) that never left an isolated leader is applied
 *     exactly once when retried through the new leader (a fresh grant), and
 *     the isolated leader's copy is discarded when it rejoins. */
static void test_retry_after_leader_loss_applied_once(void **state)
{
    struct fixture *f = *state;
    const uint64_t c = 0xC11E47u;
    struct cmd m;
    struct cmd m2;
    struct res r;
    struct res orig;
    struct res orig_open;
    Tn__Command *cmds[2];
    const struct rec *rec;
    uint64_t s1;
    uint64_t s2;
    uint64_t t1;
    uint64_t t2;
    uint64_t t3;
    uint64_t n1;
    uint64_t n2;
    uint64_t n3;
    unsigned a;
    unsigned b;
    unsigned l;
    struct fsm_stats st;
    struct fsm_lock_view v;

    raft_fixture_elect(&f->cluster, 0);
    r = propose1(f, once(mkOpen(&m, "retrier", 10000), c, 1));
    expectStatus(&r, TN__STATUS__OK, "session open");
    s1 = r.r.session;

    /* 1. A session open and an acquire replicated, leader lost; both
     * retried (in one batch) through the new leader. */
    a = liveLeader(f);
    cutAcks(f, a);
    cmds[0] = once(mkOpen(&m2, "retrier-2", 10000), c, 2);
    cmds[1] = once(mkExclusive(&m, s1, "jobs/7"), c, 3);
    submit(f, a, 0, cmds, 2, NULL, &n1);
    deliverAll(f, a);
    raft_fixture_kill(&f->cluster, a);
    restoreAcks(f, a);
    l = waitOtherLeader(f, a);
    cmds[0] = once(mkOpen(&m2, "retrier-2", 10000), c, 2);
    cmds[1] = once(mkExclusive(&m, s1, "jobs/7"), c, 3);
    rec = proposeN(f, 0, cmds, 2);
    r = rec->res[1];
    expectStatus(&rec->res[0], TN__STATUS__OK, "retried open");
    assert_true(rec->res[0].r.replayed);
    orig_open = agreedRec(f, l, n1)->res[0];
    orig = agreedRec(f, l, n1)->res[1];
    expectStatus(&orig_open, TN__STATUS__OK, "original open");
    assert_false(orig_open.r.replayed);
    /* The same session, not a second one. */
    assert_int_equal(rec->res[0].r.session, orig_open.r.session);
    fsmStats(&f->fsm[l], &st);
    assert_int_equal(st.sessions, 2);
    expectStatus(&orig, TN__STATUS__OK, "original acquire");
    assert_false(orig.r.replayed);
    t1 = orig.r.token;
    expectStatus(&r, TN__STATUS__OK, "retried acquire");
    assert_true(r.r.replayed);
    assert_int_equal(r.r.token, t1);
    assert_int_equal(r.r.generation, orig.r.generation);
    assert_int_equal(r.r.session, s1);
    assert_int_equal(r.r.epoch, orig.r.epoch);
    expectHeld(f, "jobs/7", t1);
    fsmStats(&f->fsm[l], &st);
    assert_int_equal(st.grants, 1);
    assert_true(fsmLockGet(&f->fsm[l], "jobs/7", 6, &v));
    assert_int_equal(v.n_holders, 1);
    assert_int_equal(v.generation, 1);
    converge(f);

    /* 2. Release replicated, leader lost, newer holder, retries. */
    b = liveLeader(f);
    cutAcks(f, b);
    cmds[0] = once(mkRelease(&m, "jobs/7", t1), c, 4);
    submit(f, b, 0, cmds, 1, NULL, &n2);
    deliverAll(f, b);
    raft_fixture_kill(&f->cluster, b);
    restoreAcks(f, b);
    l = waitOtherLeader(f, b);
    s2 = openSession(f, "newer", 10000); /* commits the release first */
    expectStatus(&agreedRec(f, l, n2)->res[0], TN__STATUS__OK,
                 "original release");
    t2 = grant(f, s2, "jobs/7");
    assert_true(t2 > t1);
    r = propose1(f, once(mkRelease(&m, "jobs/7", t1), c, 4));
    expectStatus(&r, TN__STATUS__OK, "retried release");
    assert_true(r.r.replayed);
    assert_int_equal(r.r.token, t1);
    expectHeld(f, "jobs/7", t2);
    /* A late retry of the original acquire gets its original answer (not
     * HELD, not a second grant) and leaves the newer holder alone. */
    r = propose1(f, once(mkExclusive(&m, s1, "jobs/7"), c, 3));
    expectStatus(&r, TN__STATUS__OK, "late retry of the acquire");
    assert_true(r.r.replayed);
    assert_int_equal(r.r.token, t1);
    expectHeld(f, "jobs/7", t2);
    r = propose1(f, mkRelease(&m, "jobs/7", t1));
    expectStatus(&r, TN__STATUS__OK, "release retried without an id");
    assert_true(r.r.replayed);
    expectHeld(f, "jobs/7", t2);
    /* A renewal with the old token is refused and does not touch it. */
    r = propose1(f, mkRenew(&m, "jobs/7", t1, 0));
    expectStatus(&r, TN__STATUS__LEASE_EXPIRED, "renewal of a released token");
    expectHeld(f, "jobs/7", t2);
    fsmStats(&f->fsm[l], &st);
    assert_int_equal(st.grants, 2);
    assert_int_equal(st.releases, 1);
    converge(f);

    /* 3. Acquire that never left an isolated leader. */
    b = liveLeader(f);
    isolate(f, b);
    cmds[0] = once(mkExclusive(&m, s1, "jobs/9"), c, 5);
    submit(f, b, 0, cmds, 1, NULL, &n3);
    l = waitOtherLeader(f, b);
    r = propose1(f, once(mkExclusive(&m, s1, "jobs/9"), c, 5));
    expectStatus(&r, TN__STATUS__OK, "retry of an acquire never replicated");
    assert_false(r.r.replayed);
    assert_false(r.r.queued);
    t3 = r.r.token;
    assert_true(t3 > t2);
    converge(f);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        assert_null(recOf(f, i, n3));
        fsmStats(&f->fsm[i], &st);
        assert_int_equal(st.grants, 3);
    }
    expectHeld(f, "jobs/9", t3);
    expectHeld(f, "jobs/7", t2);
    /* And a retry of it now is answered from the reply table. */
    r = propose1(f, once(mkExclusive(&m, s1, "jobs/9"), c, 5));
    assert_true(r.r.replayed);
    assert_int_equal(r.r.token, t3);
}

/* The exactly-once window, as the state machine keeps it (defaults:
 * client_window 64 replies per client id, client_ttl_ms 600000): a retry
 * inside the window gets the stored answer; a sequence number older than
 * the window gets INVALID_ARGUMENT (the outcome is no longer known, never a
 * second execution); once the client id was idle for longer than
 * client_ttl_ms of cluster time, its replies are forgotten and the same
 * (client_id, seq) is a new request. */
static void test_exactly_once_window(void **state)
{
    struct fixture *f = *state;
    const uint64_t c = 0x0E0E0Eu;
    struct cmd cm[MAX_CMDS];
    Tn__Command *cmds[MAX_CMDS];
    struct cmd m;
    struct res r;
    uint64_t s1;
    uint64_t seq = 1;
    struct fsm_config fc;

    fsmConfigDefaults(&fc);
    assert_int_equal(fc.client_window, 64);
    raft_fixture_elect(&f->cluster, 0);
    r = propose1(f, once(mkOpen(&m, "once", 10000), c, seq));
    expectStatus(&r, TN__STATUS__OK, "open");
    s1 = r.r.session;
    r = propose1(f, once(mkOpen(&m, "once", 10000), c, 1));
    assert_true(r.r.replayed);
    assert_int_equal(r.r.session, s1);

    /* 69 more requests: the window keeps seqs 7..70. */
    while (seq < 70) {
        size_t k = 0;
        const struct rec *rec;
        while (k < MAX_CMDS && seq < 70) {
            cmds[k] = once(mkKeepalive(&cm[k], s1), c, ++seq);
            k++;
        }
        rec = proposeN(f, 0, cmds, k);
        for (size_t i = 0; i < k; i++) {
            expectStatus(&rec->res[i], TN__STATUS__OK, "keepalive");
            assert_false(rec->res[i].r.replayed);
        }
    }
    r = propose1(f, once(mkKeepalive(&m, s1), c, 70));
    assert_true(r.r.replayed);
    r = propose1(f, once(mkKeepalive(&m, s1), c, 7));
    assert_true(r.r.replayed);
    r = propose1(f, once(mkOpen(&m, "once", 10000), c, 1));
    expectStatus(&r, TN__STATUS__INVALID_ARGUMENT, "retry older than window");
    assert_non_null(strstr(r.message, "window"));
    r = propose1(f, once(mkKeepalive(&m, s1), c, 6));
    expectStatus(&r, TN__STATUS__INVALID_ARGUMENT, "seq 6, just evicted");
    /* seq 0 with a client id is malformed. */
    r = propose1(f, once(mkKeepalive(&m, s1), c, 0));
    expectStatus(&r, TN__STATUS__INVALID_ARGUMENT, "seq 0");

    /* Idle for longer than client_ttl_ms: forgotten. The same (c, 70) is a
     * new request now (a keepalive: epoch moves on), and (c, 1) opens a
     * second session. */
    f->skew_ms += fc.client_ttl_ms + 1000;
    r = propose1(f, once(mkKeepalive(&m, s1), c, 70));
    assert_false(r.r.replayed);
    r = propose1(f, once(mkOpen(&m, "once", 10000), c, 1));
    expectStatus(&r, TN__STATUS__OK, "open after the client was forgotten");
    assert_false(r.r.replayed);
    assert_int_not_equal(r.r.session, s1);
    converge(f);
}

struct grantRec
{
    char resource[16];
    uint64_t token;
    uint64_t index;
};

/* Grant @res to @s through the leader and record the token with the index
 * of the entry that granted it. */
static struct res recordGrant(struct fixture *f,
                              uint64_t s,
                              const char *res,
                              struct grantRec *grants,
                              size_t *n)
{
    struct cmd m;
    Tn__Command *cmds[1] = { mkExclusive(&m, s, res) };
    const struct rec *rec = proposeN(f, 0, cmds, 1);
    struct res r = rec->res[0];

    if (r.r.status != TN__STATUS__OK || r.r.queued || r.r.replayed) {
        fail_msg("grant of %s: %s", res, describe(&r));
    }
    assert_true(*n < 128);
    snprintf(grants[*n].resource, sizeof grants[*n].resource, "%s", res);
    grants[*n].token = r.r.token;
    grants[*n].index = rec->index;
    (*n)++;
    return r;
}

static void transferCb(struct raft_transfer *req)
{
    (void)req;
}

static bool leaderIsCb(struct raft_fixture *c, void *arg)
{
    unsigned want = *(unsigned *)arg;
    return raft_state(raft_fixture_get(c, want)) == RAFT_LEADER;
}

/* Hand leadership from the current leader to server @to (raft_transfer),
 * as the daemon does for a `LeaderTransfer` request or on SIGTERM. */
static void transferTo(struct fixture *f, unsigned to)
{
    unsigned from = liveLeader(f);
    struct raft_transfer *req;
    assert_true(from < N_SERVERS);
    assert_int_not_equal(from, to);
    assert_true(f->n_transfers < 16);
    req = &f->transfers[f->n_transfers++];
    memset(req, 0, sizeof *req);
    assert_int_equal(raft_transfer(srv(f, from), req,
                                   raft_fixture_get(&f->cluster, to)->id,
                                   transferCb),
                     0);
    assert_true(raft_fixture_step_until(&f->cluster, leaderIsCb, &to,
                                        STEP_MS));
    assert_int_equal(liveLeader(f), to);
}

/* Fencing tokens across leader changes and snapshot installs: grants
 * (with releases in between) through a leader that changes by crash, by
 * transfer, and to a server that caught up from an installed snapshot
 * (restored through the glue). Every token is larger than every token
 * before it, per resource and cluster-wide, lies in its entry's range
 * [index << 16, (index + 1) << 16), and every replica ends identical. */
static void test_tokens_increase_across_leaders_and_snapshots(void **state)
{
    struct fixture *f = *state;
    struct grantRec grants[128];
    size_t n = 0;
    struct cmd m;
    struct res r;
    uint64_t s;
    unsigned installs = 0;
    static const char *const names[] = { "fence/a", "fence/b", "fence/c" };

    for (unsigned i = 0; i < N_SERVERS; i++) {
        raft_set_snapshot_threshold(srv(f, i), 8);
        raft_set_snapshot_trailing(srv(f, i), 2);
    }
    raft_fixture_elect(&f->cluster, 0);
    s = openSession(f, "fencer", 60000);

    for (unsigned round = 0; round < 6; round++) {
        unsigned leader = liveLeader(f);
        for (unsigned k = 0; k < 3; k++) {
            const char *res = names[(round + k) % 3];
            r = recordGrant(f, s, res, grants, &n);
            r = propose1(f, mkRelease(&m, res, r.r.token));
            expectStatus(&r, TN__STATUS__OK, "release");
        }
        switch (round % 3) {
            case 0: { /* crash of the leader */
                raft_fixture_kill(&f->cluster, leader);
                waitOtherLeader(f, leader);
                raft_fixture_revive(&f->cluster, leader);
                break;
            }
            case 1: /* transfer */
                transferTo(f, (leader + 1) % N_SERVERS);
                break;
            default: { /* a follower misses entries, gets a snapshot,
                        * then leads */
                unsigned lag = (leader + 2) % N_SERVERS;
                unsigned before = raft_fixture_n_recv(&f->cluster, lag,
                                                      RAFT_INSTALL_SNAPSHOT);
                raft_fixture_kill(&f->cluster, lag);
                for (unsigned k = 0; k < 12; k++) {
                    const char *res = names[k % 3];
                    r = recordGrant(f, s, res, grants, &n);
                    r = propose1(f, mkRelease(&m, res, r.r.token));
                    expectStatus(&r, TN__STATUS__OK, "release");
                }
                raft_fixture_revive(&f->cluster, lag);
                assert_true(raft_fixture_step_until_applied(
                    &f->cluster, lag, fsmIndex(&f->fsm[leader]), STEP_MS));
                assert_true(raft_fixture_n_recv(&f->cluster, lag,
                                                RAFT_INSTALL_SNAPSHOT) >
                            before);
                installs++;
                assert_true(sameState(&f->fsm[lag], &f->fsm[leader]));
                transferTo(f, lag);
                break;
            }
        }
    }
    assert_true(installs >= 2);

    for (size_t k = 0; k < n; k++) {
        assert_true(grants[k].token >= grants[k].index << 16);
        assert_true(grants[k].token < (grants[k].index + 1) << 16);
        if (k > 0 && grants[k].token <= grants[k - 1].token) {
            fail_msg("grant %zu (%s) token %llu <= previous %llu", k,
                     grants[k].resource,
                     (unsigned long long)grants[k].token,
                     (unsigned long long)grants[k - 1].token);
        }
    }
    converge(f);
    /* Every resource was released without a lock-delay, so the table
     * forgot it: the next grant starts its generation at 1 again, while
     * its token still goes up. */
    for (unsigned i = 0; i < N_SERVERS; i++) {
        struct fsm_lock_view v;
        assert_false(fsmLockGet(&f->fsm[i], "fence/a", 7, &v));
    }
    r = propose1(f, mkExclusive(&m, s, "fence/a"));
    assert_true(r.r.token > grants[n - 1].token);
    assert_int_equal(r.r.generation, 1);
}

/* ------------------------------------------------- restart from snapshot */

/* Restore @dst from @src's snapshot the way raft does: the snapshot
 * callback of @src's glue produces the buffers, the restore callback of a
 * glue around @dst consumes them. */
static void restartFrom(struct fixture *f, unsigned src, struct fsm *dst)
{
    struct raft_buffer *bufs = NULL;
    unsigned n_bufs = 0;
    struct raft_fsm rf;
    struct adapter_fsm w;
    struct raft_buffer one;

    assert_int_equal(f->rfsm[src].snapshot(&f->rfsm[src], &bufs, &n_bufs), 0);
    assert_int_equal(n_bufs, 1);
    adapterFsmInit(&w, &rf, dst, NULL);
    one.len = bufs[0].len;
    one.base = raft_malloc(one.len > 0 ? one.len : 1);
    assert_non_null(one.base);
    memcpy(one.base, bufs[0].base, one.len);
    raft_free(bufs[0].base);
    raft_free(bufs);
    assert_int_equal(rf.restore(&rf, &one), 0); /* takes one.base */
}

/* Apply the entries this test proposed at indexes in (@after, @upto] to
 * @dst, as raft replays the log after a snapshot on restart; each replayed
 * batch must give the results the replicas recorded. */
static void replayLog(struct fixture *f,
                      unsigned ref,
                      struct fsm *dst,
                      uint64_t after,
                      uint64_t upto)
{
    for (size_t k = 0; k < f->n_sent; k++) {
        const struct sent *s = &f->sent[k];
        const struct rec *rec;
        Tn__Batch *b;
        struct fsm_result results[MAX_CMDS];
        if (s->index <= after || s->index > upto) {
            continue;
        }
        rec = recOf(f, ref, s->nonce);
        assert_non_null(rec);
        assert_int_equal(rec->index, s->index);
        assert_int_equal(commandDecode(s->bytes, s->len, &b), 0);
        assert_true(b->n_commands <= MAX_CMDS);
        fsmApply(dst, s->index, b, results);
        for (size_t c = 0; c < b->n_commands; c++) {
            struct res got;
            copyResult(&got, &results[c]);
            if (!sameRes(&got, &rec->res[c])) {
                fail_msg("replayed entry %llu command %zu: %s",
                         (unsigned long long)s->index, c, describe(&got));
            }
        }
        commandFree(b);
    }
}

/* The events both FSMs emitted since recording was switched on. */
static void expectSameEvents(struct evLog *a, struct evLog *b)
{
    if (a->n != b->n) {
        fail_msg("%zu events vs %zu after the restart", a->n, b->n);
    }
    for (size_t k = 0; k < a->n; k++) {
        if (!sameEvent(&a->ev[k], &b->ev[k])) {
            fail_msg("event %zu differs: type %d/%d resource %s/%s", k,
                     a->ev[k].type, b->ev[k].type, a->ev[k].resource,
                     b->ev[k].resource);
        }
    }
}

/* Propose @cmds through the cluster and apply the same batch at the same
 * index to the restarted FSM @rs: same results, command by command. */
static const struct rec *proposeBoth(struct fixture *f,
                                     struct fsm *rs,
                                     Tn__Command **cmds,
                                     size_t n)
{
    unsigned leader = liveLeader(f);
    const struct rec *rec = proposeN(f, 0, cmds, n);
    const struct sent *s = &f->sent[f->n_sent - 1];
    Tn__Batch *b;
    struct fsm_result results[MAX_CMDS];

    assert_int_equal(s->nonce, rec->nonce);
    assert_int_equal(commandDecode(s->bytes, s->len, &b), 0);
    fsmApply(rs, rec->index, b, results);
    for (size_t k = 0; k < n; k++) {
        struct res got;
        copyResult(&got, &results[k]);
        if (!sameRes(&got, &rec->res[k])) {
            fail_msg("command %zu after the restart: %s", k, describe(&got));
        }
    }
    commandFree(b);
    assert_true(sameState(rs, &f->fsm[leader]));
    return rec;
}

/* A restart: an FSM restored from a snapshot taken mid-way (through the
 * glue's snapshot and restore callbacks) plus the entries after it gives
 * byte-identical state, and from then on the same answers and the same
 * events as the replicas that never restarted, for every kind of answer
 * that depends on remembered state: exactly-once replays (including a
 * still-queued acquire), tombstones (released / expired), lock-delay,
 * holders in the way, semaphore permits, an old-epoch expiry, FIFO
 * hand-off to waiters with writer preference, and timers that fire later
 * (lock-delay end, a wait running out). */
static void test_restart_from_snapshot_same_answers(void **state)
{
    struct fixture *f = *state;
    const uint64_t c = 0xABCDu;
    struct fsm rs;
    struct fsm_config fc;
    struct cmd cm[MAX_CMDS];
    Tn__Command *cmds[MAX_CMDS];
    struct cmd m;
    struct res r;
    const struct rec *rec;
    uint64_t sa, sb, sc, sd, se, sreplay;
    uint64_t tx, tr1, tr2, ty, tz, tafter;
    uint64_t snap_index;
    unsigned leader;
    size_t k;

    raft_fixture_elect(&f->cluster, 0);
    leader = 0;
    sa = openSession(f, "a", 10000);
    sb = openSession(f, "b", 10000);
    sc = openSession(f, "c", 10000);
    sd = openSession(f, "d", 10000);
    se = openSession(f, "doomed", 2000);

    /* x: held by a (lock-delay 3 s if it expires), b waits for it. */
    tx = propose1(f, mkAcquire(&m, sa, "x", TN__LOCK_MODE__EXCLUSIVE, 0, 0,
                               3000))
             .r.token;
    r = propose1(f, once(mkAcquire(&m, sb, "x", TN__LOCK_MODE__EXCLUSIVE, 0,
                                   60000, 0),
                         c, 1));
    assert_true(r.r.queued);
    /* r: two readers, then a writer waits, then a reader queues behind the
     * writer (writer preference). */
    tr1 = propose1(f, mkAcquire(&m, sa, "r", TN__LOCK_MODE__SHARED, 0, 0, 0))
              .r.token;
    tr2 = propose1(f, mkAcquire(&m, sb, "r", TN__LOCK_MODE__SHARED, 0, 0, 0))
              .r.token;
    r = propose1(f, once(mkAcquire(&m, sc, "r", TN__LOCK_MODE__EXCLUSIVE, 0,
                                   60000, 0),
                         c, 2));
    assert_true(r.r.queued);
    r = propose1(f, once(mkAcquire(&m, sd, "r", TN__LOCK_MODE__SHARED, 0,
                                   20000, 0),
                         c, 3));
    assert_true(r.r.queued);
    /* sem: 2 permits, both taken. */
    propose1(f, mkAcquire(&m, sa, "sem", TN__LOCK_MODE__SEMAPHORE, 2, 0, 0));
    propose1(f, mkAcquire(&m, sb, "sem", TN__LOCK_MODE__SEMAPHORE, 2, 0, 0));
    /* y: released (tombstone "released"). */
    ty = grant(f, sc, "y");
    r = propose1(f, mkRelease(&m, "y", ty));
    expectStatus(&r, TN__STATUS__OK, "release y");
    /* z: held by the doomed session, which expires: lock-delay 30 s,
     * tombstone "expired". */
    tz = propose1(f, mkAcquire(&m, se, "z", TN__LOCK_MODE__EXCLUSIVE, 0, 0,
                               30000))
             .r.token;
    r = propose1(f, mkExpire(&m, se, 1));
    expectStatus(&r, TN__STATUS__OK, "expire the doomed session");
    r = propose1(f, once(mkOpen(&m, "replayable", 10000), c, 4));
    expectStatus(&r, TN__STATUS__OK, "open with an id");
    sreplay = r.r.session;

    /* The snapshot a restarting server would load. */
    snap_index = fsmIndex(&f->fsm[leader]);
    assert_int_equal(fsmInit(&rs, (fsmConfigDefaults(&fc), &fc)), 0);
    restartFrom(f, leader, &rs);
    assert_int_equal(fsmIndex(&rs), snap_index);

    /* Entries after the snapshot: a logged renewal, a grant, a release
     * with an id. */
    r = propose1(f, mkRenew(&m, "x", tx, 0));
    assert_int_equal(r.r.epoch, 2);
    tafter = grant(f, sd, "after");
    r = propose1(f, once(mkRelease(&m, "after", tafter), c, 5));
    expectStatus(&r, TN__STATUS__OK, "release after");

    /* The restarted server replays the log after its snapshot. */
    replayLog(f, leader, &rs, snap_index, fsmIndex(&f->fsm[leader]));
    assert_true(sameState(&rs, &f->fsm[leader]));

    /* Same answers from now on, events included. */
    for (unsigned i = 0; i <= N_SERVERS; i++) {
        f->events[i].n = 0;
        f->events[i].on = true;
    }
    rs.data = &f->events[N_SERVERS];
    rs.event_cb = eventCb;
    k = 0;
    cmds[k] = once(mkAcquire(&cm[k], sb, "x", TN__LOCK_MODE__EXCLUSIVE, 0,
                             60000, 0),
                   c, 1), k++;                       /* replay: queued */
    cmds[k] = once(mkOpen(&cm[k], "replayable", 10000), c, 4), k++;
    cmds[k] = once(mkRelease(&cm[k], "after", tafter), c, 5), k++;
    cmds[k] = mkRelease(&cm[k], "y", ty), k++;       /* released before */
    cmds[k] = mkRenew(&cm[k], "y", ty, 0), k++;      /* LEASE_EXPIRED */
    cmds[k] = mkRelease(&cm[k], "z", tz), k++;       /* expired: late */
    cmds[k] = mkExclusive(&cm[k], sa, "z"), k++;     /* LOCK_DELAY */
    cmds[k] = mkExclusive(&cm[k], sd, "x"), k++;     /* HELD by a */
    cmds[k] = mkAcquire(&cm[k], sc, "sem", TN__LOCK_MODE__SEMAPHORE, 2, 0,
                        0), k++;                     /* HELD: no permit */
    cmds[k] = mkExpire(&cm[k], sa, 1), k++;          /* old epoch */
    cmds[k] = mkKeepalive(&cm[k], sc), k++;
    cmds[k] = mkRelease(&cm[k], "x", tx), k++;       /* hand-off to b */
    cmds[k] = mkRelease(&cm[k], "r", tr1), k++;
    cmds[k] = mkRelease(&cm[k], "r", tr2), k++;      /* writer c gets r */
    cmds[k] = mkExclusive(&cm[k], sa, "fresh"), k++;
    rec = proposeBoth(f, &rs, cmds, k);
    expectStatus(&rec->res[0], TN__STATUS__OK, "replayed queued acquire");
    assert_true(rec->res[0].r.replayed);
    assert_true(rec->res[1].r.replayed);
    assert_int_equal(rec->res[1].r.session, sreplay);
    assert_true(rec->res[2].r.replayed);
    expectStatus(&rec->res[3], TN__STATUS__OK, "release of a released token");
    assert_true(rec->res[3].r.replayed);
    expectStatus(&rec->res[4], TN__STATUS__LEASE_EXPIRED, "renew released");
    expectStatus(&rec->res[5], TN__STATUS__LEASE_EXPIRED, "release expired");
    expectStatus(&rec->res[6], TN__STATUS__LOCK_DELAY, "acquire in delay");
    assert_true(rec->res[6].r.lock_delay_until_ms > stampNow(f));
    expectStatus(&rec->res[7], TN__STATUS__HELD, "acquire held");
    assert_string_equal(rec->res[7].holder, "a");
    expectStatus(&rec->res[8], TN__STATUS__HELD, "semaphore full");
    expectStatus(&rec->res[9], TN__STATUS__INVALID_ARGUMENT, "old epoch");
    expectStatus(&rec->res[10], TN__STATUS__OK, "keepalive");
    expectStatus(&rec->res[11], TN__STATUS__OK, "release x");
    expectStatus(&rec->res[14], TN__STATUS__OK, "fresh grant");
    /* The hand-offs happened in both: b holds x, c holds r (exclusive),
     * d still waits for r behind it. */
    {
        struct fsm_lock_view v;
        assert_true(fsmLockGet(&rs, "x", 1, &v));
        assert_int_equal(v.holders[0].session, sb);
        assert_true(fsmLockGet(&rs, "r", 1, &v));
        assert_int_equal(v.n_holders, 1);
        assert_int_equal(v.holders[0].session, sc);
        assert_int_equal(v.queue_len, 1);
    }
    expectSameEvents(&f->events[leader], &f->events[N_SERVERS]);

    /* Time passes: d's wait runs out, z's lock-delay ends; both FSMs fire
     * the same timers in the same order. */
    for (unsigned i = 0; i <= N_SERVERS; i++) {
        f->events[i].n = 0;
    }
    assert_int_equal(fsmNextDeadline(&rs),
                     fsmNextDeadline(&f->fsm[leader]));
    f->skew_ms += 65000;
    k = 0;
    cmds[k] = mkTick(&cm[k]), k++;
    cmds[k] = mkExclusive(&cm[k], sa, "z"), k++; /* free again */
    rec = proposeBoth(f, &rs, cmds, k);
    expectStatus(&rec->res[1], TN__STATUS__OK, "z after its lock-delay");
    assert_true(rec->res[1].r.token > tz);
    assert_int_equal(rec->res[1].r.generation, 1); /* forgotten, restarted */
    expectSameEvents(&f->events[leader], &f->events[N_SERVERS]);
    assert_int_equal(fsmNextDeadline(&rs),
                     fsmNextDeadline(&f->fsm[leader]));
    fsmClose(&rs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_deposed_leader_expiry_ignored,
                                        setUp, tearDown),
        cmocka_unit_test_setup_teardown(
            test_expiry_behind_renewal_after_leader_loss, setUp, tearDown),
        cmocka_unit_test_setup_teardown(
            test_retry_after_leader_loss_applied_once, setUp, tearDown),
        cmocka_unit_test_setup_teardown(test_exactly_once_window, setUp,
                                        tearDown),
        cmocka_unit_test_setup_teardown(
            test_tokens_increase_across_leaders_and_snapshots, setUp,
            tearDown),
        cmocka_unit_test_setup_teardown(
            test_restart_from_snapshot_same_answers, setUp, tearDown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
