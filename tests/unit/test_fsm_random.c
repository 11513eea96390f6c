/* Seeded randomized tests of the lock table against a small reference
 * model, and of the AVL tree under it.
 *
 * Exclusive resources ("x0".."x5") are predicted exactly by the model:
 * every status of acquire / release / renew / keepalive / close / expire,
 * who holds what, queue lengths and lock-delays. Shared and semaphore
 * resources ("s0", "s1", "m0") are checked through invariants: all holders
 * of a lock share one mode, exclusive has one holder, a semaphore at most N,
 * tokens rise strictly per resource and cluster-wide, no grant ever goes to
 * a dead session. A replica FSM, restored from a snapshot of the primary
 * part way through, must give the same answers and end with the same
 * snapshot bytes.
 *
 * TN_FSM_SEED=<n> reruns one seed; TN_FSM_SEEDS=<n> changes how many. */
#include "lib/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm.h"
#include "lib/avl.h"

/* ---------------------------------------------------------------- rng */

static uint64_t rngState;

static uint32_t rnd(void)
{
    /* xorshift64* */
    rngState ^= rngState >> 12;
    rngState ^= rngState << 25;
    rngState ^= rngState >> 27;
    return (uint32_t)((rngState * UINT64_C(2685821657736338717)) >> 32);
}

static uint32_t below(uint32_t n)
{
    return n > 0 ? rnd() % n : 0;
}

static bool chance(uint32_t percent)
{
    return below(100) < percent;
}

/* ---------------------------------------------------------- reporting */

static unsigned currentSeed;
static int currentStep;

#define CHECK(cond)                                                     \
    do {                                                                \
        if (!(cond)) {                                                  \
            print_error("seed=%u step=%d: %s (line %d)\n", currentSeed, \
                        currentStep, #cond, __LINE__);                  \
            fail();                                                     \
        }                                                               \
    } while (0)

/* -------------------------------------------------------------- model */

#define N_X          6 /* exclusive resources, modelled exactly */
#define MAX_SESSIONS 512
#define MAX_TOKENS   8192
#define MAX_EVENTS   512

enum { TK_HELD = 1, TK_RELEASED, TK_EXPIRED };

struct msession
{
    uint64_t id;
    uint64_t epoch;
    uint32_t delay; /* lock-delay this session asks for on x* */
    bool alive;
};

struct mres
{
    uint64_t holder_session; /* 0: free */
    uint64_t holder_token;
    uint32_t holder_delay; /* capped lock-delay of the holder */
    uint64_t delay_until;
    uint32_t waiters;
    uint64_t last_token;
};

struct mtoken
{
    uint64_t token;
    int res; /* index into X, or -1 for other resources */
    int state;
    int mode;
};

struct ev
{
    enum fsm_event_type type;
    uint64_t session;
    uint64_t epoch;
    int status;
    bool replayed;
    uint64_t token;
    int mode;
    char resource[16];
};

struct world
{
    struct fsm primary;
    struct fsm replica;
    bool have_replica;
    struct fsm_config config;
    uint64_t index;
    uint64_t now;
    uint64_t term;
    uint64_t client_seq;
    struct msession sessions[MAX_SESSIONS];
    int n_sessions;
    struct mres x[N_X];
    struct mtoken tokens[MAX_TOKENS];
    int n_tokens;
    uint64_t max_token;
    struct ev events[MAX_EVENTS];
    int n_events;
    int n_replica_events;
    uint64_t other_last_token[3];
    /* statistics of the run, to be sure the test exercises things */
    unsigned grants;
    unsigned handoffs;
    unsigned timeouts;
    unsigned delays;
    unsigned replays;
};

static const char *xName[N_X] = { "x0", "x1", "x2", "x3", "x4", "x5" };
static const char *otherName[3] = { "s0", "s1", "m0" };

static int xIndex(const char *name)
{
    for (int i = 0; i < N_X; i++) {
        if (strcmp(name, xName[i]) == 0) {
            return i;
        }
    }
    return -1;
}

static int otherIndex(const char *name)
{
    for (int i = 0; i < 3; i++) {
        if (strcmp(name, otherName[i]) == 0) {
            return i;
        }
    }
    return -1;
}

static struct msession *msession(struct world *w, uint64_t id)
{
    for (int i = 0; i < w->n_sessions; i++) {
        if (w->sessions[i].id == id) {
            return &w->sessions[i];
        }
    }
    return NULL;
}

static struct mtoken *mtoken(struct world *w, uint64_t token)
{
    /* Tokens are added in increasing order: binary search. */
    int lo = 0;
    int hi = w->n_tokens;

    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (w->tokens[mid].token == token) {
            return &w->tokens[mid];
        }
        if (w->tokens[mid].token < token) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

/* A new grant: strictly increasing tokens, to a live session. */
static void modelGrant(struct world *w,
                       const char *resource,
                       uint64_t session,
                       uint64_t token,
                       int mode,
                       uint32_t delay)
{
    int xi = xIndex(resource);
    struct msession *s = msession(w, session);

    CHECK(s != NULL && s->alive);
    CHECK(token > w->max_token);
    w->max_token = token;
    CHECK(w->n_tokens < MAX_TOKENS);
    w->tokens[w->n_tokens].token = token;
    w->tokens[w->n_tokens].res = xi;
    w->tokens[w->n_tokens].state = TK_HELD;
    w->tokens[w->n_tokens].mode = mode;
    w->n_tokens++;
    w->grants++;
    if (xi >= 0) {
        struct mres *m = &w->x[xi];
        CHECK(mode == TN__LOCK_MODE__EXCLUSIVE);
        CHECK(m->holder_session == 0);   /* never two holders */
        CHECK(m->delay_until <= w->now); /* never inside a delay */
        CHECK(token > m->last_token);
        m->holder_session = session;
        m->holder_token = token;
        m->holder_delay = delay;
        m->last_token = token;
    } else {
        int oi = otherIndex(resource);
        CHECK(oi >= 0);
        CHECK(token > w->other_last_token[oi]);
        w->other_last_token[oi] = token;
    }
}

/* A hold ended (release, close, expiry). */
static void modelFree(struct world *w, int xi, bool expired)
{
    struct mres *m = &w->x[xi];
    struct mtoken *t = mtoken(w, m->holder_token);

    CHECK(t != NULL && t->state == TK_HELD);
    t->state = expired ? TK_EXPIRED : TK_RELEASED;
    if (expired && m->holder_delay > 0) {
        uint64_t until = w->now + m->holder_delay;
        if (until > m->delay_until) {
            m->delay_until = until;
        }
    }
    m->holder_session = 0;
    m->holder_token = 0;
    m->holder_delay = 0;
}

static void modelSessionEnded(struct world *w, uint64_t id, bool expired)
{
    struct msession *s = msession(w, id);

    CHECK(s != NULL && s->alive);
    s->alive = false;
    for (int i = 0; i < N_X; i++) {
        if (w->x[i].holder_session == id) {
            modelFree(w, i, expired);
        }
    }
}

/* ------------------------------------------------------------- events */

static void onEvent(void *data, const struct fsm_event *e)
{
    struct world *w = data;
    struct ev *r;

    CHECK(w->n_events < MAX_EVENTS);
    r = &w->events[w->n_events++];
    memset(r, 0, sizeof *r);
    r->type = e->type;
    r->session = e->session;
    r->epoch = e->epoch;
    if (e->result != NULL) {
        r->status = e->result->status;
        r->replayed = e->result->replayed;
        r->token = e->result->token;
        r->mode = e->result->mode;
    }
    if (e->resource != NULL) {
        size_t n = e->resource_len < sizeof r->resource - 1
                       ? e->resource_len
                       : sizeof r->resource - 1;
        memcpy(r->resource, e->resource, n);
    }
    if (e->type == FSM_EVENT_WAIT_DONE && e->result->status == 0 &&
        !e->result->replayed) {
        /* Granted to a waiter: the session must be live right now. */
        struct fsm_session_view v;
        CHECK(fsmSessionGet(&w->primary, e->session, &v));
    }
}

static void onReplicaEvent(void *data, const struct fsm_event *e)
{
    struct world *w = data;
    (void)e;
    w->n_replica_events++;
}

/* Process the recorded events after the command's own result. Ephemeral
 * session opens are handled before the result by the caller. */
static void modelEvents(struct world *w, int from)
{
    for (int i = from; i < w->n_events; i++) {
        struct ev *e = &w->events[i];
        int xi = xIndex(e->resource);

        switch (e->type) {
        case FSM_EVENT_SESSION_OPEN: {
            struct msession *s = msession(w, e->session);
            if (s == NULL) {
                CHECK(w->n_sessions < MAX_SESSIONS);
                s = &w->sessions[w->n_sessions++];
                s->id = e->session;
                s->epoch = e->epoch;
                s->alive = true;
            }
            break;
        }
        case FSM_EVENT_SESSION_END: {
            struct msession *s = msession(w, e->session);
            CHECK(s != NULL);
            if (s->alive) {
                /* An ephemeral session whose last lock / waiter went. */
                for (int k = 0; k < N_X; k++) {
                    CHECK(w->x[k].holder_session != e->session);
                }
                s->alive = false;
            }
            break;
        }
        case FSM_EVENT_WAIT_DONE:
            if (xi >= 0) {
                struct mres *m = &w->x[xi];
                CHECK(m->waiters > 0);
                m->waiters--;
                if (e->status == TN__STATUS__OK) {
                    if (e->replayed) {
                        CHECK(m->holder_session == e->session);
                        CHECK(m->holder_token == e->token);
                    } else {
                        struct msession *s = msession(w, e->session);
                        uint32_t d = s != NULL ? s->delay : 0;
                        if (d > w->config.max_lock_delay_ms) {
                            d = w->config.max_lock_delay_ms;
                        }
                        modelGrant(w, e->resource, e->session, e->token,
                                   e->mode, d);
                        w->handoffs++;
                    }
                } else {
                    CHECK(e->status == TN__STATUS__HELD ||
                          e->status == TN__STATUS__LOCK_DELAY ||
                          e->status == TN__STATUS__SESSION_EXPIRED);
                    if (e->status != TN__STATUS__SESSION_EXPIRED) {
                        w->timeouts++;
                    }
                }
            } else if (e->status == TN__STATUS__OK && !e->replayed) {
                modelGrant(w, e->resource, e->session, e->token, e->mode, 0);
            }
            break;
        default:
            break;
        }
    }
}

/* ---------------------------------------------------------- applying */

/* Apply one command as its own entry on both FSMs; compare the replica. */
static struct fsm_result applyOne(struct world *w, Tn__Command *c, int *mark)
{
    Tn__Batch b = TN__BATCH__INIT;
    Tn__Command *p = c;
    struct fsm_result r;
    struct fsm_result rr;
    int before = w->n_replica_events;

    b.version = 1;
    b.term = w->term;
    b.now_ms = w->now;
    b.n_commands = 1;
    b.commands = &p;
    w->index++;
    *mark = w->n_events;
    fsmApply(&w->primary, w->index, &b, &r);
    if (w->have_replica) {
        fsmApply(&w->replica, w->index, &b, &rr);
        CHECK(rr.status == r.status);
        CHECK(rr.token == r.token);
        CHECK(rr.session == r.session);
        CHECK(rr.epoch == r.epoch);
        CHECK(rr.queued == r.queued);
        CHECK(rr.replayed == r.replayed);
        CHECK(rr.holder_token == r.holder_token);
        CHECK(w->n_replica_events - before == w->n_events - *mark);
    }
    return r;
}

/* Ephemeral opens first, then the result, then the rest. */
static void handleOpens(struct world *w, int mark)
{
    for (int i = mark; i < w->n_events; i++) {
        if (w->events[i].type == FSM_EVENT_SESSION_OPEN) {
            struct msession *s = msession(w, w->events[i].session);
            if (s == NULL) {
                CHECK(w->n_sessions < MAX_SESSIONS);
                s = &w->sessions[w->n_sessions++];
                s->id = w->events[i].session;
                s->epoch = 1;
                s->alive = true;
                s->delay = 0;
            }
        }
    }
}

/* ----------------------------------------------------------- commands */

static uint64_t pickSession(struct world *w, bool allow_dead)
{
    if (w->n_sessions == 0 || (allow_dead && chance(5))) {
        return 1 + below(1000); /* never a real id (those are index<<16) */
    }
    for (int tries = 0; tries < 8; tries++) {
        struct msession *s = &w->sessions[below((uint32_t)w->n_sessions)];
        if (s->alive || (allow_dead && chance(20))) {
            return s->id;
        }
    }
    return w->sessions[below((uint32_t)w->n_sessions)].id;
}

static void doOpen(struct world *w)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__SessionOpen o = TN__SESSION_OPEN__INIT;
    struct fsm_result r;
    int mark;

    if (w->n_sessions >= MAX_SESSIONS - 8) {
        return;
    }
    o.holder = "rnd";
    w->sessions[w->n_sessions].delay = chance(50) ? 0 : below(6000);
    o.ttl_ms = 500 + below(20000);
    c.body_case = TN__COMMAND__BODY_SESSION_OPEN;
    c.session_open = &o;
    r = applyOne(w, &c, &mark);
    CHECK(r.status == TN__STATUS__OK);
    CHECK(r.epoch == 1);
    CHECK(r.ttl_ms >= w->config.min_ttl_ms && r.ttl_ms <= w->config.max_ttl_ms);
    modelEvents(w, mark);
    CHECK(msession(w, r.session) != NULL && msession(w, r.session)->alive);
    CHECK(w->sessions[w->n_sessions - 1].id == r.session);
}

/* Compare a retry's answer with the first one. */
static void retryCheck(struct world *w,
                       Tn__Command *c,
                       const struct fsm_result *first)
{
    struct fsm_result r;
    int mark;

    r = applyOne(w, c, &mark);
    CHECK(r.replayed);
    CHECK(r.status == first->status);
    CHECK(r.token == first->token);
    CHECK(r.session == first->session);
    CHECK(r.epoch == first->epoch);
    CHECK(r.queued == first->queued);
    CHECK(w->n_events == mark); /* nothing happened */
    w->replays++;
}

static void doAcquireX(struct world *w, bool ephemeral)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__Acquire a = TN__ACQUIRE__INIT;
    int xi = (int)below(N_X);
    struct mres *m = &w->x[xi];
    uint64_t sid = ephemeral ? 0 : pickSession(w, true);
    struct msession *s = msession(w, sid);
    uint32_t wait = chance(50) ? 0 : 1 + below(8000);
    uint32_t delay = s != NULL ? s->delay : 0;
    uint32_t capped_wait =
        wait < w->config.max_wait_ms ? wait : w->config.max_wait_ms;
    uint32_t capped_delay = delay < w->config.max_lock_delay_ms
                                ? delay
                                : w->config.max_lock_delay_ms;
    bool once = chance(30);
    struct fsm_result r;
    int mark;

    a.session = sid;
    a.resource = (char *)xName[xi];
    a.wait_ms = wait;
    a.lock_delay_ms = delay;
    if (ephemeral) {
        a.holder = "eph";
        a.ttl_ms = 1000 + below(9000);
    }
    c.body_case = TN__COMMAND__BODY_ACQUIRE;
    c.acquire = &a;
    if (once) {
        c.client_id = 1 + below(4);
        c.seq = ++w->client_seq;
    }
    r = applyOne(w, &c, &mark);
    handleOpens(w, mark);

    if (!ephemeral && (s == NULL || !s->alive)) {
        CHECK(r.status == TN__STATUS__SESSION_EXPIRED);
        CHECK(!r.queued);
    } else if (!ephemeral && m->holder_session == sid) {
        CHECK(r.status == TN__STATUS__OK);
        CHECK(r.replayed);
        CHECK(r.token == m->holder_token);
    } else if (m->delay_until > w->now) {
        if (wait == 0 || w->now + capped_wait < m->delay_until) {
            CHECK(r.status == TN__STATUS__LOCK_DELAY);
            CHECK(r.lock_delay_until_ms == m->delay_until);
            w->delays++;
        } else {
            CHECK(r.status == TN__STATUS__OK && r.queued);
        }
    } else if (m->holder_session == 0 && m->waiters == 0) {
        CHECK(r.status == TN__STATUS__OK);
        CHECK(!r.queued && !r.replayed);
        modelGrant(w, xName[xi], r.session, r.token, r.mode, capped_delay);
    } else if (wait == 0) {
        CHECK(r.status == TN__STATUS__HELD);
        if (m->holder_session != 0) {
            CHECK(r.holder_session == m->holder_session);
            CHECK(r.holder_token == m->holder_token);
        }
        CHECK(r.queue_len == m->waiters);
    } else {
        CHECK(r.status == TN__STATUS__OK && r.queued);
    }
    if (r.queued) {
        m->waiters++;
        CHECK(r.queue_len == m->waiters);
    }
    modelEvents(w, mark);
    if (once && chance(50)) {
        retryCheck(w, &c, &r);
    }
}

static uint64_t pickToken(struct world *w, int xi)
{
    struct mres *m = &w->x[xi];

    if (m->holder_session != 0 && chance(50)) {
        return m->holder_token;
    }
    if (w->n_tokens > 0 && chance(85)) {
        return w->tokens[below((uint32_t)w->n_tokens)].token;
    }
    return chance(50) ? w->max_token + 1 + below(100) : 1 + below(1000);
}

/* The status the model expects for release / renew of @token on x[xi]. */
static int expectTokenStatus(struct world *w,
                             int xi,
                             uint64_t token,
                             bool release,
                             bool *replayed)
{
    struct mres *m = &w->x[xi];
    struct mtoken *t = mtoken(w, token);

    *replayed = false;
    if (m->holder_session != 0 && m->holder_token == token) {
        return TN__STATUS__OK;
    }
    if (t != NULL && t->res == xi && t->state != TK_HELD) {
        if (t->state == TK_RELEASED && release) {
            *replayed = true;
            return TN__STATUS__OK;
        }
        return TN__STATUS__LEASE_EXPIRED;
    }
    if (m->holder_session != 0) {
        return TN__STATUS__TOKEN_MISMATCH;
    }
    if (token > w->max_token) {
        return TN__STATUS__INVALID_ARGUMENT;
    }
    return TN__STATUS__LEASE_EXPIRED;
}

static void doReleaseX(struct world *w)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__Release rel = TN__RELEASE__INIT;
    int xi = (int)below(N_X);
    struct mres *m = &w->x[xi];
    uint64_t token = pickToken(w, xi);
    bool replayed;
    int expect = expectTokenStatus(w, xi, token, true, &replayed);
    uint64_t holder = m->holder_session;
    uint64_t holder_token = m->holder_token;
    bool once = chance(30);
    struct fsm_result r;
    int mark;

    rel.resource = (char *)xName[xi];
    rel.token = token;
    c.body_case = TN__COMMAND__BODY_RELEASE;
    c.release = &rel;
    if (once) {
        c.client_id = 1 + below(4);
        c.seq = ++w->client_seq;
    }
    r = applyOne(w, &c, &mark);
    CHECK(r.status == expect);
    CHECK(r.replayed == replayed);
    if (expect == TN__STATUS__OK && !replayed) {
        modelFree(w, xi, false);
    }
    if (expect == TN__STATUS__TOKEN_MISMATCH) {
        CHECK(r.holder_session == holder);
        CHECK(r.holder_token == holder_token);
        CHECK(m->holder_token == holder_token); /* untouched */
    }
    modelEvents(w, mark);
    if (once && chance(50)) {
        retryCheck(w, &c, &r);
    }
}

static void doRenewX(struct world *w)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__Renew rn = TN__RENEW__INIT;
    int xi = (int)below(N_X);
    struct mres *m = &w->x[xi];
    uint64_t token = pickToken(w, xi);
    bool replayed;
    int expect = expectTokenStatus(w, xi, token, false, &replayed);
    struct fsm_result r;
    int mark;

    rn.resource = (char *)xName[xi];
    rn.token = token;
    rn.ttl_ms = chance(50) ? 0 : 1000 + below(10000);
    c.body_case = TN__COMMAND__BODY_RENEW;
    c.renew = &rn;
    r = applyOne(w, &c, &mark);
    CHECK(r.status == expect);
    if (expect == TN__STATUS__OK) {
        struct msession *s = msession(w, m->holder_session);
        CHECK(s != NULL);
        CHECK(r.epoch == s->epoch + 1);
        s->epoch = r.epoch;
    }
    modelEvents(w, mark);
}

static void doKeepalive(struct world *w)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__SessionKeepalive k = TN__SESSION_KEEPALIVE__INIT;
    uint64_t sid = pickSession(w, true);
    struct msession *s = msession(w, sid);
    struct fsm_result r;
    int mark;

    k.session = sid;
    c.body_case = TN__COMMAND__BODY_KEEPALIVE;
    c.keepalive = &k;
    r = applyOne(w, &c, &mark);
    if (s == NULL || !s->alive) {
        CHECK(r.status == TN__STATUS__SESSION_EXPIRED);
    } else {
        CHECK(r.status == TN__STATUS__OK);
        CHECK(r.epoch == s->epoch + 1);
        s->epoch = r.epoch;
    }
    modelEvents(w, mark);
}

static void doEnd(struct world *w, bool expire)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__SessionClose cl = TN__SESSION_CLOSE__INIT;
    Tn__SessionExpire ex = TN__SESSION_EXPIRE__INIT;
    uint64_t sid = pickSession(w, true);
    struct msession *s = msession(w, sid);
    bool stale_term = expire && chance(10);
    bool old_epoch = expire && s != NULL && chance(15);
    uint64_t term = w->term;
    struct fsm_result r;
    int mark;

    if (expire) {
        ex.session = sid;
        ex.epoch = s != NULL ? s->epoch - (old_epoch ? 1 : 0) : 1;
        c.body_case = TN__COMMAND__BODY_SESSION_EXPIRE;
        c.session_expire = &ex;
    } else {
        cl.session = sid;
        c.body_case = TN__COMMAND__BODY_SESSION_CLOSE;
        c.session_close = &cl;
    }
    if (stale_term) {
        w->term = term - 1;
    }
    r = applyOne(w, &c, &mark);
    w->term = term;
    if (s == NULL || !s->alive) {
        CHECK(r.status == TN__STATUS__SESSION_EXPIRED);
    } else if (stale_term || old_epoch) {
        CHECK(r.status == TN__STATUS__INVALID_ARGUMENT);
        CHECK(r.epoch == s->epoch);
    } else {
        CHECK(r.status == TN__STATUS__OK);
        modelSessionEnded(w, sid, expire);
    }
    modelEvents(w, mark);
}

static void doOther(struct world *w)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__Acquire a = TN__ACQUIRE__INIT;
    Tn__Release rel = TN__RELEASE__INIT;
    int oi = (int)below(3);
    struct fsm_result r;
    int mark;

    if (chance(60)) {
        uint64_t sid = pickSession(w, true);
        struct msession *s = msession(w, sid);
        struct fsm_lock_view before;
        uint32_t queued_before = 0;
        bool held_before = false;
        if (fsmLockGet(&w->primary, otherName[oi], 2, &before)) {
            queued_before = before.queue_len;
            for (uint32_t i = 0; i < before.n_holders; i++) {
                held_before |= before.holders[i].session == sid;
            }
        }
        a.session = sid;
        a.resource = (char *)otherName[oi];
        if (oi == 2) {
            a.mode = TN__LOCK_MODE__SEMAPHORE;
            a.permits = chance(95) ? 2 : 3;
        } else {
            a.mode =
                chance(70) ? TN__LOCK_MODE__SHARED : TN__LOCK_MODE__EXCLUSIVE;
        }
        a.wait_ms = chance(50) ? 0 : below(5000);
        a.lock_delay_ms = chance(80) ? 0 : below(3000);
        c.body_case = TN__COMMAND__BODY_ACQUIRE;
        c.acquire = &a;
        r = applyOne(w, &c, &mark);
        if (s == NULL || !s->alive) {
            CHECK(r.status == TN__STATUS__SESSION_EXPIRED);
        } else if (r.status == TN__STATUS__OK && !r.queued && !r.replayed) {
            /* FIFO: nobody jumps a queue (writer preference included). */
            CHECK(queued_before == 0);
            CHECK(!held_before);
            modelGrant(w, otherName[oi], sid, r.token, r.mode, 0);
        }
        if (a.permits == 3 && r.status == TN__STATUS__OK) {
            /* Only possible if no semaphore of size 2 was around. */
            struct fsm_lock_view v;
            CHECK(fsmLockGet(&w->primary, "m0", 2, &v));
            CHECK(v.permits == 3);
        }
    } else {
        struct fsm_lock_view v;
        uint64_t token =
            w->n_tokens > 0 ? w->tokens[below((uint32_t)w->n_tokens)].token : 1;
        if (fsmLockGet(&w->primary, otherName[oi], 2, &v) && v.n_holders > 0 &&
            chance(70)) {
            token = v.holders[below(v.n_holders)].token;
        }
        rel.resource = (char *)otherName[oi];
        rel.token = token;
        c.body_case = TN__COMMAND__BODY_RELEASE;
        c.release = &rel;
        r = applyOne(w, &c, &mark);
    }
    modelEvents(w, mark);
}

static void doTick(struct world *w)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__Tick t = TN__TICK__INIT;
    uint64_t next = fsmNextDeadline(&w->primary);
    int mark;

    if (next != UINT64_MAX && chance(60)) {
        w->now = next > w->now ? next : w->now; /* exactly at a deadline */
    } else {
        w->now += below(3000);
    }
    if (chance(3)) {
        w->term++;
    }
    c.body_case = TN__COMMAND__BODY_TICK;
    c.tick = &t;
    /* Lock-delays that end now: the model lifts them before the timers'
     * events (hand-offs) are processed. */
    for (int i = 0; i < N_X; i++) {
        if (w->x[i].delay_until != 0 && w->x[i].delay_until <= w->now) {
            w->x[i].delay_until = 0;
        }
    }
    CHECK(applyOne(w, &c, &mark).status == TN__STATUS__OK);
    modelEvents(w, mark);
    CHECK(fsmNextDeadline(&w->primary) > w->now);
}

/* --------------------------------------------------------- invariants */

struct lockCheck
{
    struct world *w;
    uint64_t holders;
    uint64_t waiters;
};

static int checkLock(void *data, const struct fsm_lock_view *l)
{
    struct lockCheck *lc = data;
    struct world *w = lc->w;
    char name[16] = { 0 };
    int xi;

    memcpy(name, l->resource, l->resource_len < 15 ? l->resource_len : 15);
    xi = xIndex(name);
    lc->holders += l->n_holders;
    lc->waiters += l->queue_len;
    if (l->mode == TN__LOCK_MODE__EXCLUSIVE) {
        CHECK(l->n_holders <= 1);
    } else if (l->mode == TN__LOCK_MODE__SEMAPHORE) {
        CHECK(l->n_holders <= l->permits);
    }
    for (uint32_t i = 0; i < l->n_holders; i++) {
        struct fsm_session_view sv;
        struct mtoken *t = mtoken(w, l->holders[i].token);
        CHECK(fsmSessionGet(&w->primary, l->holders[i].session, &sv));
        CHECK(t != NULL);
        CHECK(t->mode == l->mode);
        CHECK(l->holders[i].token <= l->last_token);
        if (i > 0) {
            CHECK(l->holders[i].token > l->holders[i - 1].token);
        }
    }
    if (xi >= 0) {
        struct mres *m = &w->x[xi];
        if (m->holder_session != 0) {
            CHECK(l->n_holders == 1);
            CHECK(l->holders[0].session == m->holder_session);
            CHECK(l->holders[0].token == m->holder_token);
        } else {
            CHECK(l->n_holders == 0);
        }
        CHECK(l->queue_len == m->waiters);
        CHECK(l->lock_delay_until_ms ==
              (m->delay_until > w->now ? m->delay_until : 0));
    }
    return 0;
}

static int countLocks(void *data, const struct fsm_session_view *s)
{
    uint64_t *n = data;
    *n += s->n_locks;
    return 0;
}

static void checkInvariants(struct world *w)
{
    struct lockCheck lc = { w, 0, 0 };
    struct fsm_stats st;
    uint64_t session_locks = 0;

    fsmLockForEach(&w->primary, "", 0, checkLock, &lc);
    fsmStats(&w->primary, &st);
    CHECK(st.locks_held == lc.holders);
    CHECK(st.waiters == lc.waiters);
    fsmSessionForEach(&w->primary, countLocks, &session_locks);
    CHECK(session_locks == st.locks_held);
    for (int i = 0; i < N_X; i++) {
        struct fsm_lock_view v;
        bool known = fsmLockGet(&w->primary, xName[i], 2, &v);
        struct mres *m = &w->x[i];
        CHECK(known == (m->holder_session != 0 || m->waiters > 0 ||
                        m->delay_until > w->now));
    }
    for (int i = 0; i < w->n_sessions; i++) {
        struct fsm_session_view v;
        bool live = fsmSessionGet(&w->primary, w->sessions[i].id, &v);
        CHECK(live == w->sessions[i].alive);
        if (live) {
            CHECK(v.epoch == w->sessions[i].epoch);
        }
    }
}

/* Snapshot the primary and restore it into the replica; the replica's own
 * snapshot must be byte-identical. */
static void syncReplica(struct world *w)
{
    void *a;
    void *b;
    size_t na;
    size_t nb;

    CHECK(fsmSnapshot(&w->primary, &a, &na) == 0);
    if (!w->have_replica) {
        CHECK(fsmInit(&w->replica, &w->config) == 0);
        w->replica.data = w;
        w->replica.event_cb = onReplicaEvent;
        w->have_replica = true;
    }
    CHECK(fsmRestore(&w->replica, a, na) == 0);
    CHECK(fsmSnapshot(&w->replica, &b, &nb) == 0);
    CHECK(na == nb);
    CHECK(memcmp(a, b, na) == 0);
    free(a);
    free(b);
}

static void compareReplica(struct world *w)
{
    void *a;
    void *b;
    size_t na;
    size_t nb;

    if (!w->have_replica) {
        return;
    }
    CHECK(fsmSnapshot(&w->primary, &a, &na) == 0);
    CHECK(fsmSnapshot(&w->replica, &b, &nb) == 0);
    CHECK(na == nb);
    CHECK(memcmp(a, b, na) == 0);
    free(a);
    free(b);
}

/* ------------------------------------------------------------- driver */

struct fixture
{
    struct world *w;
    unsigned seeds;
    unsigned first_seed;
};

static int setUp(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    const char *one = getenv("TN_FSM_SEED");
    const char *many = getenv("TN_FSM_SEEDS");

    assert_non_null(f);
    f->w = calloc(1, sizeof *f->w);
    assert_non_null(f->w);
    f->seeds = many != NULL ? (unsigned)atoi(many) : 300;
    f->first_seed = 1;
    if (one != NULL) {
        f->first_seed = (unsigned)atoi(one);
        f->seeds = 1;
    }
    *state = f;
    return 0;
}

static int tearDown(void **state)
{
    struct fixture *f = *state;

    free(f->w);
    free(f);
    return 0;
}

static void runSeed(struct world *w, unsigned seed, int steps)
{
    memset(w, 0, sizeof *w);
    currentSeed = seed;
    rngState = UINT64_C(0x9e3779b97f4a7c15) ^ ((uint64_t)seed << 1 | 1);
    fsmConfigDefaults(&w->config);
    w->config.min_ttl_ms = 500;
    w->config.max_wait_ms = 6000;
    w->config.max_lock_delay_ms = 4000;
    w->config.tombstones = MAX_TOKENS; /* never forget: exact answers */
    w->config.client_ttl_ms = 20000;
    w->config.client_window = 8;
    assert_int_equal(fsmInit(&w->primary, &w->config), 0);
    w->primary.data = w;
    w->primary.event_cb = onEvent;
    w->index = 1;
    w->now = 1000000;
    w->term = 5;

    for (currentStep = 0; currentStep < steps; currentStep++) {
        uint32_t op = below(100);
        w->n_events = 0;
        if (w->n_tokens > MAX_TOKENS - 16) {
            break;
        }
        if (currentStep == steps / 3) {
            syncReplica(w);
        }
        if (op < 8 || w->n_sessions < 2) {
            doOpen(w);
        } else if (op < 38) {
            doAcquireX(w, false);
        } else if (op < 43) {
            doAcquireX(w, true);
        } else if (op < 58) {
            doReleaseX(w);
        } else if (op < 62) {
            doRenewX(w);
        } else if (op < 66) {
            doKeepalive(w);
        } else if (op < 70) {
            doEnd(w, false);
        } else if (op < 76) {
            doEnd(w, true);
        } else if (op < 86) {
            doOther(w);
        } else {
            doTick(w);
        }
        checkInvariants(w);
    }
    compareReplica(w);
    fsmClose(&w->primary);
    if (w->have_replica) {
        fsmClose(&w->replica);
    }
}

/* Thousands of random operations per seed never break the model or the
 * invariants, and a restored replica stays identical. */
static void test_random_against_model(void **state)
{
    struct fixture *f = *state;
    unsigned grants = 0;
    unsigned handoffs = 0;
    unsigned timeouts = 0;
    unsigned delays = 0;
    unsigned replays = 0;

    for (unsigned i = 0; i < f->seeds; i++) {
        runSeed(f->w, f->first_seed + i, 600);
        grants += f->w->grants;
        handoffs += f->w->handoffs;
        timeouts += f->w->timeouts;
        delays += f->w->delays;
        replays += f->w->replays;
    }
    print_message(
        "%u seeds: %u grants, %u hand-offs, %u wait timeouts, "
        "%u lock-delay refusals, %u replays\n",
        f->seeds, grants, handoffs, timeouts, delays, replays);
    /* The run must have exercised the interesting paths. */
    if (f->seeds >= 50) {
        assert_true(grants > 1000);
        assert_true(handoffs > 100);
        assert_true(timeouts > 50);
        assert_true(delays > 20);
        assert_true(replays > 100);
    }
}

/* -------------------------------------------------------------- scale */

static int countPrefix(void *data, const struct fsm_lock_view *l)
{
    uint64_t *n = data;
    (void)l;
    (*n)++;
    return 0;
}

/* A hundred thousand held locks: grants, lookups, prefix listing, snapshot
 * round trip and a session close that frees them all in one apply. */
static void test_scale(void **state)
{
    enum { N = 100000, B = 64 };
    struct fsm fsm;
    struct fsm replica;
    struct fsm_config config;
    Tn__Batch b = TN__BATCH__INIT;
    Tn__Command cmd = TN__COMMAND__INIT;
    Tn__Command *one = &cmd;
    Tn__SessionOpen open = TN__SESSION_OPEN__INIT;
    Tn__SessionClose close = TN__SESSION_CLOSE__INIT;
    static Tn__Command cs[B];
    static Tn__Acquire as[B];
    static Tn__Command *ps[B];
    static char names[B][32];
    struct fsm_result rs[B];
    struct fsm_result r;
    struct fsm_stats st;
    struct fsm_lock_view v;
    uint64_t index = 1;
    uint64_t session;
    uint64_t n = 0;
    void *s1;
    void *s2;
    size_t n1;
    size_t n2;
    (void)state;

    fsmConfigDefaults(&config);
    assert_int_equal(fsmInit(&fsm, &config), 0);
    b.term = 1;
    b.now_ms = 5000;
    open.holder = "bulk";
    open.ttl_ms = 10000;
    cmd.body_case = TN__COMMAND__BODY_SESSION_OPEN;
    cmd.session_open = &open;
    b.commands = &one;
    b.n_commands = 1;
    fsmApply(&fsm, ++index, &b, &r);
    session = r.session;
    for (int i = 0; i < N; i += B) {
        for (int k = 0; k < B; k++) {
            Tn__Command ci = TN__COMMAND__INIT;
            Tn__Acquire ai = TN__ACQUIRE__INIT;
            /* Spread the keys so the tree sees them out of order. */
            snprintf(names[k], sizeof names[k], "jobs/%06d",
                     (int)(((uint64_t)(i + k) * 7919) % N));
            cs[k] = ci;
            as[k] = ai;
            as[k].session = session;
            as[k].resource = names[k];
            cs[k].body_case = TN__COMMAND__BODY_ACQUIRE;
            cs[k].acquire = &as[k];
            ps[k] = &cs[k];
        }
        b.commands = ps;
        b.n_commands = (size_t)(N - i < B ? N - i : B);
        fsmApply(&fsm, ++index, &b, rs);
        for (size_t k = 0; k < b.n_commands; k++) {
            assert_int_equal(rs[k].status, TN__STATUS__OK);
        }
    }
    fsmStats(&fsm, &st);
    assert_int_equal(st.locks_held, N);
    assert_true(fsmLockGet(&fsm, "jobs/004242", 11, &v));
    assert_int_equal(v.holders[0].session, session);
    fsmLockForEach(&fsm, "jobs/0042", 9, countPrefix, &n);
    assert_int_equal(n, 100);

    assert_int_equal(fsmSnapshot(&fsm, &s1, &n1), 0);
    assert_int_equal(fsmInit(&replica, &config), 0);
    assert_int_equal(fsmRestore(&replica, s1, n1), 0);
    assert_int_equal(fsmSnapshot(&replica, &s2, &n2), 0);
    assert_int_equal(n1, n2);
    assert_memory_equal(s1, s2, n1);

    close.session = session;
    cmd.body_case = TN__COMMAND__BODY_SESSION_CLOSE;
    cmd.session_close = &close;
    b.commands = &one;
    b.n_commands = 1;
    fsmApply(&fsm, ++index, &b, &r);
    assert_int_equal(r.status, TN__STATUS__OK);
    fsmStats(&fsm, &st);
    assert_int_equal(st.locks_held, 0);
    assert_int_equal(st.releases, N);
    assert_false(fsmLockGet(&fsm, "jobs/004242", 11, &v));
    free(s1);
    free(s2);
    fsmClose(&fsm);
    fsmClose(&replica);
}

/* ---------------------------------------------------------------- avl */

struct item
{
    struct tn_avl_node node;
    uint32_t key;
};

static int itemCmp(const struct tn_avl_node *a, const struct tn_avl_node *b)
{
    uint32_t ka = TN_AVL_DATA(a, struct item, node)->key;
    uint32_t kb = TN_AVL_DATA(b, struct item, node)->key;
    return ka < kb ? -1 : ka > kb;
}

static int itemKeyCmp(const void *key, const struct tn_avl_node *n)
{
    uint32_t k = *(const uint32_t *)key;
    uint32_t kn = TN_AVL_DATA(n, struct item, node)->key;
    return k < kn ? -1 : k > kn;
}

static void itemFree(struct tn_avl_node *n, void *data)
{
    (void)data;
    free(TN_AVL_DATA(n, struct item, node));
}

/* Random inserts and removals keep the tree ordered and balanced, and
 * lookups agree with a plain array. */
static void test_avl_random(void **state)
{
    enum { KEYS = 512 };
    struct item *present[KEYS];
    struct tn_avl t;
    (void)state;

    rngState = 12345;
    memset(present, 0, sizeof present);
    tn_avl_init(&t);
    for (int step = 0; step < 40000; step++) {
        uint32_t k = below(KEYS);
        if (present[k] == NULL) {
            struct item *it = malloc(sizeof *it);
            assert_non_null(it);
            it->key = k;
            assert_null(tn_avl_insert(&t, &it->node, itemCmp));
            present[k] = it;
        } else if (chance(60)) {
            tn_avl_remove(&t, &present[k]->node);
            free(present[k]);
            present[k] = NULL;
        } else {
            struct item dup = { .key = k };
            assert_ptr_equal(tn_avl_insert(&t, &dup.node, itemCmp),
                             &present[k]->node);
        }
        if (step % 97 == 0) {
            uint32_t q = below(KEYS + 10);
            struct tn_avl_node *lb = tn_avl_lower_bound(&t, &q, itemKeyCmp);
            uint32_t want = q;
            assert_int_equal(tn_avl_check(&t, itemCmp), 0);
            while (want < KEYS && present[want] == NULL) {
                want++;
            }
            if (want >= KEYS) {
                assert_null(lb);
            } else {
                assert_ptr_equal(lb, &present[want]->node);
            }
            if (q < KEYS) {
                struct tn_avl_node *found = tn_avl_find(&t, &q, itemKeyCmp);
                assert_ptr_equal(found,
                                 present[q] != NULL ? &present[q]->node : NULL);
            }
        }
    }
    /* Walk both ways. */
    {
        size_t n = 0;
        struct tn_avl_node *it;
        for (it = tn_avl_first(&t); it != NULL; it = tn_avl_next(it)) {
            n++;
        }
        assert_int_equal(n, t.count);
        n = 0;
        for (it = tn_avl_last(&t); it != NULL; it = tn_avl_prev(it)) {
            n++;
        }
        assert_int_equal(n, t.count);
    }
    tn_avl_clear(&t, itemFree, NULL);
    assert_null(t.root);
    assert_int_equal(t.count, 0);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setUp, tearDown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_random_against_model),
        T(test_avl_random),
        T(test_scale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
