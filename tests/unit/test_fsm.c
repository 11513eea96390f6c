/* Unit tests of the lock table (server/fsm.c). */
#include "lib/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm.h"

#define MAX_EVENTS 256

struct recorded
{
    enum fsm_event_type type;
    uint64_t index;
    uint64_t session;
    uint64_t epoch;
    uint32_t ttl_ms;
    uint64_t client_id;
    uint64_t seq;
    int status;
    bool queued;
    uint64_t token;
    char resource[64];
};

struct fixture
{
    struct fsm fsm;
    struct fsm_config config;
    uint64_t index;
    uint64_t now;
    uint64_t term;
    uint64_t client_id; /* stamped on the next commands when non-zero */
    uint64_t seq;
    struct recorded events[MAX_EVENTS];
    size_t n_events;
};

static void onEvent(void *data, const struct fsm_event *e)
{
    struct fixture *f = data;
    struct recorded *r;

    assert_true(f->n_events < MAX_EVENTS);
    r = &f->events[f->n_events++];
    memset(r, 0, sizeof *r);
    r->type = e->type;
    r->index = e->index;
    r->session = e->session;
    r->epoch = e->epoch;
    r->ttl_ms = e->ttl_ms;
    r->client_id = e->client_id;
    r->seq = e->seq;
    if (e->result != NULL) {
        r->status = e->result->status;
        r->queued = e->result->queued;
        r->token = e->result->token;
    }
    if (e->resource != NULL) {
        size_t n = e->resource_len < sizeof r->resource - 1
                       ? e->resource_len
                       : sizeof r->resource - 1;
        memcpy(r->resource, e->resource, n);
    }
}

static void fixtureStart(struct fixture *f)
{
    assert_int_equal(fsmInit(&f->fsm, &f->config), 0);
    f->fsm.data = f;
    f->fsm.event_cb = onEvent;
}

static int setUp(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    fsmConfigDefaults(&f->config);
    fixtureStart(f);
    f->index = 1;
    f->now = 1000000;
    f->term = 1;
    *state = f;
    return 0;
}

static int tearDown(void **state)
{
    struct fixture *f = *state;

    fsmClose(&f->fsm);
    free(f);
    return 0;
}

/* Restart the FSM with a changed configuration. */
static void reconfigure(struct fixture *f)
{
    fsmClose(&f->fsm);
    fixtureStart(f);
}

/* ------------------------------------------------------------- helpers */

/* Apply @n commands as one entry (next index, current time and term). */
static void applyBatch(struct fixture *f,
                       Tn__Command **cmds,
                       size_t n,
                       struct fsm_result *results)
{
    Tn__Batch b = TN__BATCH__INIT;

    b.version = 1;
    b.term = f->term;
    b.now_ms = f->now;
    b.n_commands = n;
    b.commands = cmds;
    f->index++;
    fsmApply(&f->fsm, f->index, &b, results);
}

static struct fsm_result applyCmd(struct fixture *f, Tn__Command *c)
{
    struct fsm_result r;

    if (f->client_id != 0) {
        c->client_id = f->client_id;
        c->seq = f->seq;
    }
    applyBatch(f, &c, 1, &r);
    return r;
}

static uint64_t openSession(struct fixture *f, const char *holder, uint32_t ttl)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__SessionOpen o = TN__SESSION_OPEN__INIT;
    struct fsm_result r;

    o.holder = (char *)holder;
    o.ttl_ms = ttl;
    c.body_case = TN__COMMAND__BODY_SESSION_OPEN;
    c.session_open = &o;
    r = applyCmd(f, &c);
    assert_int_equal(r.status, TN__STATUS__OK);
    return r.session;
}

static struct fsm_result acquireFull(struct fixture *f,
                                     uint64_t session,
                                     const char *resource,
                                     int mode,
                                     uint32_t permits,
                                     uint32_t wait_ms,
                                     uint32_t lock_delay_ms)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__Acquire a = TN__ACQUIRE__INIT;

    a.session = session;
    a.resource = (char *)resource;
    a.mode = (Tn__LockMode)mode;
    a.permits = permits;
    a.wait_ms = wait_ms;
    a.lock_delay_ms = lock_delay_ms;
    c.body_case = TN__COMMAND__BODY_ACQUIRE;
    c.acquire = &a;
    return applyCmd(f, &c);
}

static struct fsm_result acquire(struct fixture *f,
                                 uint64_t session,
                                 const char *resource)
{
    return acquireFull(f, session, resource, TN__LOCK_MODE__EXCLUSIVE, 0, 0, 0);
}

static struct fsm_result acquireEphemeral(struct fixture *f,
                                          const char *holder,
                                          uint32_t ttl_ms,
                                          const char *resource,
                                          uint32_t wait_ms)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__Acquire a = TN__ACQUIRE__INIT;

    a.resource = (char *)resource;
    a.holder = (char *)holder;
    a.ttl_ms = ttl_ms;
    a.wait_ms = wait_ms;
    c.body_case = TN__COMMAND__BODY_ACQUIRE;
    c.acquire = &a;
    return applyCmd(f, &c);
}

static struct fsm_result release(struct fixture *f,
                                 const char *resource,
                                 uint64_t token)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__Release rel = TN__RELEASE__INIT;

    rel.resource = (char *)resource;
    rel.token = token;
    c.body_case = TN__COMMAND__BODY_RELEASE;
    c.release = &rel;
    return applyCmd(f, &c);
}

static struct fsm_result renew(struct fixture *f,
                               const char *resource,
                               uint64_t token,
                               uint32_t ttl_ms)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__Renew rn = TN__RENEW__INIT;

    rn.resource = (char *)resource;
    rn.token = token;
    rn.ttl_ms = ttl_ms;
    c.body_case = TN__COMMAND__BODY_RENEW;
    c.renew = &rn;
    return applyCmd(f, &c);
}

static struct fsm_result keepalive(struct fixture *f, uint64_t session)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__SessionKeepalive k = TN__SESSION_KEEPALIVE__INIT;

    k.session = session;
    c.body_case = TN__COMMAND__BODY_KEEPALIVE;
    c.keepalive = &k;
    return applyCmd(f, &c);
}

static struct fsm_result closeSession(struct fixture *f, uint64_t session)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__SessionClose k = TN__SESSION_CLOSE__INIT;

    k.session = session;
    c.body_case = TN__COMMAND__BODY_SESSION_CLOSE;
    c.session_close = &k;
    return applyCmd(f, &c);
}

static struct fsm_result expire(struct fixture *f,
                                uint64_t session,
                                uint64_t epoch)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__SessionExpire x = TN__SESSION_EXPIRE__INIT;

    x.session = session;
    x.epoch = epoch;
    c.body_case = TN__COMMAND__BODY_SESSION_EXPIRE;
    c.session_expire = &x;
    return applyCmd(f, &c);
}

static struct fsm_result tick(struct fixture *f)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__Tick t = TN__TICK__INIT;

    c.body_case = TN__COMMAND__BODY_TICK;
    c.tick = &t;
    return applyCmd(f, &c);
}

static struct fsm_result member(struct fixture *f,
                                uint64_t id,
                                const char *rpc,
                                const char *http)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__MemberInfo m = TN__MEMBER_INFO__INIT;

    m.id = id;
    m.rpc_address = (char *)rpc;
    m.http_address = (char *)http;
    m.raft_address = "127.0.0.1:7001";
    c.body_case = TN__COMMAND__BODY_MEMBER;
    c.member = &m;
    return applyCmd(f, &c);
}

static bool lockGet(struct fixture *f,
                    const char *resource,
                    struct fsm_lock_view *v)
{
    return fsmLockGet(&f->fsm, resource, strlen(resource), v);
}

static const struct recorded *findEvent(struct fixture *f,
                                        enum fsm_event_type type,
                                        size_t from)
{
    for (size_t i = from; i < f->n_events; i++) {
        if (f->events[i].type == type) {
            return &f->events[i];
        }
    }
    return NULL;
}

static size_t countEvents(struct fixture *f, enum fsm_event_type type)
{
    size_t n = 0;

    for (size_t i = 0; i < f->n_events; i++) {
        n += f->events[i].type == type;
    }
    return n;
}

static void snapshotOf(struct fsm *fsm, void **buf, size_t *len)
{
    assert_int_equal(fsmSnapshot(fsm, buf, len), 0);
}

/* --------------------------------------------------------------- tests */

/* Opening a session clamps the TTL, starts at epoch 1 and emits OPEN. */
static void test_session_open(void **state)
{
    struct fixture *f = *state;
    struct fsm_session_view v;
    uint64_t a = openSession(f, "worker-1", 10);
    uint64_t b = openSession(f, "worker-2", 1000000000);
    uint64_t c = openSession(f, "worker-3", 5000);

    assert_true(fsmSessionGet(&f->fsm, a, &v));
    assert_int_equal(v.ttl_ms, f->config.min_ttl_ms);
    assert_int_equal(v.epoch, 1);
    assert_string_equal(v.holder, "worker-1");
    assert_int_equal(v.created_at_ms, f->now);
    assert_int_equal(v.n_locks, 0);
    assert_true(fsmSessionGet(&f->fsm, b, &v));
    assert_int_equal(v.ttl_ms, f->config.max_ttl_ms);
    assert_true(fsmSessionGet(&f->fsm, c, &v));
    assert_int_equal(v.ttl_ms, 5000);
    assert_true(a < b && b < c);
    assert_int_equal(a, (uint64_t)2 << 16); /* first entry applied at 2 */
    assert_int_equal(countEvents(f, FSM_EVENT_SESSION_OPEN), 3);
    assert_int_equal(f->events[0].session, a);
    assert_int_equal(f->events[0].epoch, 1);
    assert_false(fsmSessionGet(&f->fsm, 12345, &v));
}

/* A holder name that is too long or not UTF-8 is rejected. */
static void test_session_open_bad_holder(void **state)
{
    struct fixture *f = *state;
    Tn__Command c = TN__COMMAND__INIT;
    Tn__SessionOpen o = TN__SESSION_OPEN__INIT;
    char longname[300];
    struct fsm_result r;

    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    o.holder = longname;
    c.body_case = TN__COMMAND__BODY_SESSION_OPEN;
    c.session_open = &o;
    r = applyCmd(f, &c);
    assert_int_equal(r.status, TN__STATUS__INVALID_ARGUMENT);
    assert_non_null(strstr(r.message, "holder"));
    o.holder = "bad\xff";
    r = applyCmd(f, &c);
    assert_int_equal(r.status, TN__STATUS__INVALID_ARGUMENT);
    o.holder = "tab\there";
    r = applyCmd(f, &c);
    assert_int_equal(r.status, TN__STATUS__INVALID_ARGUMENT);
    assert_int_equal(countEvents(f, FSM_EVENT_SESSION_OPEN), 0);
}

/* A free resource is granted with a token derived from the entry index. */
static void test_acquire_grants(void **state)
{
    struct fixture *f = *state;
    uint64_t s = openSession(f, "w", 5000);
    struct fsm_result r = acquire(f, s, "orders/42");
    struct fsm_lock_view v;

    assert_int_equal(r.status, TN__STATUS__OK);
    assert_false(r.replayed);
    assert_false(r.queued);
    assert_int_equal(r.session, s);
    assert_int_equal(r.epoch, 1);
    assert_int_equal(r.ttl_ms, 5000);
    assert_int_equal(r.token, f->index << 16);
    assert_int_equal(r.generation, 1);
    assert_int_equal(r.mode, TN__LOCK_MODE__EXCLUSIVE);
    assert_true(lockGet(f, "orders/42", &v));
    assert_int_equal(v.resource_len, 9);
    assert_memory_equal(v.resource, "orders/42", 9);
    assert_int_equal(v.n_holders, 1);
    assert_int_equal(v.holders[0].session, s);
    assert_string_equal(v.holders[0].holder, "w");
    assert_int_equal(v.holders[0].token, r.token);
    assert_int_equal(v.holders[0].acquired_at_ms, f->now);
    assert_int_equal(v.holders[0].ttl_ms, 5000);
    assert_int_equal(v.generation, 1);
    assert_int_equal(v.last_token, r.token);
    assert_int_equal(v.queue_len, 0);
    assert_int_equal(v.lock_delay_until_ms, 0);
    assert_int_equal(v.modified_index, f->index);
    assert_non_null(findEvent(f, FSM_EVENT_LOCK_CHANGE, 0));
    assert_string_equal(findEvent(f, FSM_EVENT_LOCK_CHANGE, 0)->resource,
                        "orders/42");
}

/* A conflicting acquire says who holds the lock, since when, for how long. */
static void test_conflict_reports_holder(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "alice", 7000);
    uint64_t b = openSession(f, "bob", 5000);
    struct fsm_result ra = acquire(f, a, "r");
    uint64_t granted_at = f->now;
    struct fsm_result rb;
    struct fsm_stats st;

    f->now += 1234;
    rb = acquire(f, b, "r");
    assert_int_equal(rb.status, TN__STATUS__HELD);
    assert_int_equal(rb.holder_session, a);
    assert_string_equal(rb.holder, "alice");
    assert_int_equal(rb.holder_token, ra.token);
    assert_int_equal(rb.acquired_at_ms, granted_at);
    assert_int_equal(rb.holder_ttl_ms, 7000);
    assert_int_equal(rb.queue_len, 0);
    assert_int_equal(rb.lock_delay_until_ms, 0);
    assert_int_equal(rb.token, 0);
    fsmStats(&f->fsm, &st);
    assert_int_equal(st.conflicts, 1);
    assert_int_equal(st.grants, 1);
}

/* Releasing with the holder's token frees the lock at once. */
static void test_release_by_token(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    uint64_t b = openSession(f, "b", 5000);
    struct fsm_result ra = acquire(f, a, "r");
    struct fsm_result rel = release(f, "r", ra.token);
    struct fsm_lock_view v;
    struct fsm_session_view sv;
    struct fsm_stats st;

    assert_int_equal(rel.status, TN__STATUS__OK);
    assert_false(rel.replayed);
    assert_int_equal(rel.token, ra.token);
    assert_int_equal(rel.session, a);
    assert_false(lockGet(f, "r", &v));
    assert_true(fsmSessionGet(&f->fsm, a, &sv)); /* session lives on */
    assert_int_equal(sv.n_locks, 0);
    assert_int_equal(acquire(f, b, "r").status, TN__STATUS__OK);
    fsmStats(&f->fsm, &st);
    assert_int_equal(st.releases, 1);
    assert_int_equal(st.locks_held, 1);
}

/* A retried release of the same token is answered OK, replayed. */
static void test_release_idempotent(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    uint64_t b = openSession(f, "b", 5000);
    struct fsm_result ra = acquire(f, a, "r");
    struct fsm_result rb;
    struct fsm_result rel;
    struct fsm_lock_view v;

    assert_int_equal(release(f, "r", ra.token).status, TN__STATUS__OK);
    rel = release(f, "r", ra.token);
    assert_int_equal(rel.status, TN__STATUS__OK);
    assert_true(rel.replayed);
    /* Even once someone newer holds it, the old release stays harmless. */
    rb = acquire(f, b, "r");
    rel = release(f, "r", ra.token);
    assert_int_equal(rel.status, TN__STATUS__OK);
    assert_true(rel.replayed);
    assert_true(lockGet(f, "r", &v));
    assert_int_equal(v.holders[0].token, rb.token);
}

/* A token nobody remembers, on a lock someone else holds, is a mismatch
 * and the newer holder's lock is never touched. */
static void test_stale_token_mismatch(void **state)
{
    struct fixture *f = *state;
    uint64_t a;
    uint64_t b;
    struct fsm_result ra;
    struct fsm_result rb;
    struct fsm_result r;
    struct fsm_lock_view v;

    f->config.tombstones = 1;
    reconfigure(f);
    a = openSession(f, "a", 5000);
    b = openSession(f, "b", 5000);
    ra = acquire(f, a, "r");
    assert_int_equal(release(f, "r", ra.token).status, TN__STATUS__OK);
    rb = acquire(f, b, "r");
    /* Push a's token out of the one-slot tombstone ring. */
    r = acquire(f, a, "other");
    assert_int_equal(release(f, "other", r.token).status, TN__STATUS__OK);

    r = release(f, "r", ra.token);
    assert_int_equal(r.status, TN__STATUS__TOKEN_MISMATCH);
    assert_int_equal(r.holder_session, b);
    assert_string_equal(r.holder, "b");
    assert_int_equal(r.holder_token, rb.token);
    r = renew(f, "r", ra.token, 0);
    assert_int_equal(r.status, TN__STATUS__TOKEN_MISMATCH);
    assert_int_equal(r.holder_token, rb.token);
    /* A token of another resource is no good either. */
    r = acquire(f, a, "third");
    assert_int_equal(release(f, "r", r.token).status,
                     TN__STATUS__TOKEN_MISMATCH);
    assert_true(lockGet(f, "r", &v));
    assert_int_equal(v.n_holders, 1);
    assert_int_equal(v.holders[0].token, rb.token);
    assert_int_equal(v.holders[0].session, b);
    assert_true(lockGet(f, "third", &v)); /* untouched as well */
}

/* Release and renew of a token whose lease expired say LEASE_EXPIRED and
 * count as late requests. */
static void test_lease_expired_after_expiry(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    uint64_t b = openSession(f, "b", 5000);
    struct fsm_result ra = acquire(f, a, "r");
    struct fsm_result r;
    struct fsm_stats st;

    assert_int_equal(expire(f, a, 1).status, TN__STATUS__OK);
    r = release(f, "r", ra.token);
    assert_int_equal(r.status, TN__STATUS__LEASE_EXPIRED);
    assert_int_equal(r.session, a);
    r = renew(f, "r", ra.token, 0);
    assert_int_equal(r.status, TN__STATUS__LEASE_EXPIRED);
    /* Still LEASE_EXPIRED once somebody else holds it. */
    assert_int_equal(acquire(f, b, "r").status, TN__STATUS__OK);
    assert_int_equal(release(f, "r", ra.token).status,
                     TN__STATUS__LEASE_EXPIRED);
    fsmStats(&f->fsm, &st);
    assert_int_equal(st.late_requests, 3);
    assert_int_equal(st.expiries, 1);
}

/* Session expiry frees every lock, drops every waiter and ends it. */
static void test_expiry_releases_everything(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    uint64_t b = openSession(f, "b", 5000);
    struct fsm_lock_view v;
    struct fsm_session_view sv;
    const struct recorded *e;
    size_t mark;
    struct fsm_stats st;

    acquire(f, a, "x");
    acquire(f, a, "y");
    acquire(f, b, "z");
    f->client_id = 9;
    f->seq = 1;
    assert_true(acquireFull(f, a, "z", 0, 0, 60000, 0).queued);
    f->client_id = 0;
    mark = f->n_events;
    assert_int_equal(expire(f, a, 1).status, TN__STATUS__OK);
    assert_false(fsmSessionGet(&f->fsm, a, &sv));
    assert_false(lockGet(f, "x", &v));
    assert_false(lockGet(f, "y", &v));
    assert_true(lockGet(f, "z", &v));
    assert_int_equal(v.queue_len, 0);
    e = findEvent(f, FSM_EVENT_WAIT_DONE, mark);
    assert_non_null(e);
    assert_int_equal(e->status, TN__STATUS__SESSION_EXPIRED);
    assert_int_equal(e->client_id, 9);
    assert_int_equal(e->seq, 1);
    assert_string_equal(e->resource, "z");
    e = findEvent(f, FSM_EVENT_SESSION_END, mark);
    assert_non_null(e);
    assert_int_equal(e->session, a);
    fsmStats(&f->fsm, &st);
    assert_int_equal(st.sessions, 1);
    assert_int_equal(st.locks_held, 1);
    assert_int_equal(st.waiters, 0);
    assert_int_equal(fsmNextDeadline(&f->fsm), UINT64_MAX);
}

/* An expiry naming an epoch older than the session's is ignored. */
static void test_expiry_old_epoch_ignored(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    struct fsm_result r;
    struct fsm_lock_view v;

    acquire(f, a, "x");
    r = keepalive(f, a);
    assert_int_equal(r.status, TN__STATUS__OK);
    assert_int_equal(r.epoch, 2);
    assert_non_null(findEvent(f, FSM_EVENT_SESSION_RENEW, 0));
    r = expire(f, a, 1);
    assert_int_equal(r.status, TN__STATUS__INVALID_ARGUMENT);
    assert_int_equal(r.epoch, 2);
    assert_int_equal(r.ttl_ms, 5000);
    assert_true(lockGet(f, "x", &v));
    assert_null(findEvent(f, FSM_EVENT_SESSION_END, 0));
    assert_int_equal(expire(f, a, 2).status, TN__STATUS__OK);
    assert_false(lockGet(f, "x", &v));
    /* Already gone. */
    assert_int_equal(expire(f, a, 2).status, TN__STATUS__SESSION_EXPIRED);
}

/* An expiry proposed in a term older than one already applied is ignored. */
static void test_expiry_stale_term_ignored(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    struct fsm_lock_view v;
    struct fsm_result r;

    acquire(f, a, "x");
    f->term = 5;
    tick(f);
    assert_int_equal(fsmTerm(&f->fsm), 5);
    f->term = 4;
    r = expire(f, a, 1);
    assert_int_equal(r.status, TN__STATUS__INVALID_ARGUMENT);
    assert_true(lockGet(f, "x", &v));
    assert_int_equal(fsmTerm(&f->fsm), 5); /* never goes back */
    f->term = 5;
    assert_int_equal(expire(f, a, 1).status, TN__STATUS__OK);
    assert_false(lockGet(f, "x", &v));
}

/* Acquire without a session opens one for this lock; it ends on release. */
static void test_ephemeral_session(void **state)
{
    struct fixture *f = *state;
    uint64_t other = openSession(f, "other", 5000);
    struct fsm_result r = acquireEphemeral(f, "curl", 8000, "job", 0);
    struct fsm_session_view sv;
    struct fsm_result held;
    size_t opens;

    assert_int_equal(r.status, TN__STATUS__OK);
    assert_int_not_equal(r.session, 0);
    assert_int_equal(r.ttl_ms, 8000);
    assert_true(fsmSessionGet(&f->fsm, r.session, &sv));
    assert_string_equal(sv.holder, "curl");
    assert_int_equal(sv.n_locks, 1);
    /* A refused ephemeral acquire opens no session. */
    opens = countEvents(f, FSM_EVENT_SESSION_OPEN);
    held = acquireEphemeral(f, "curl2", 8000, "job", 0);
    assert_int_equal(held.status, TN__STATUS__HELD);
    assert_int_equal(held.session, 0);
    assert_string_equal(held.holder, "curl");
    assert_int_equal(countEvents(f, FSM_EVENT_SESSION_OPEN), opens);
    /* Renew through the token renews the ephemeral session. */
    assert_int_equal(renew(f, "job", r.token, 9000).epoch, 2);
    assert_int_equal(release(f, "job", r.token).status, TN__STATUS__OK);
    assert_false(fsmSessionGet(&f->fsm, r.session, &sv));
    assert_non_null(findEvent(f, FSM_EVENT_SESSION_END, 0));
    assert_int_equal(findEvent(f, FSM_EVENT_SESSION_END, 0)->session,
                     r.session);
    assert_true(fsmSessionGet(&f->fsm, other, &sv));
    /* Neither a session nor a TTL: invalid. */
    assert_int_equal(acquireEphemeral(f, "x", 0, "job", 0).status,
                     TN__STATUS__INVALID_ARGUMENT);
}

/* An ephemeral waiter whose wait runs out takes its session with it. */
static void test_ephemeral_waiter_timeout(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    struct fsm_result r;
    struct fsm_session_view sv;

    acquire(f, a, "job");
    r = acquireEphemeral(f, "curl", 8000, "job", 1000);
    assert_true(r.queued);
    assert_true(fsmSessionGet(&f->fsm, r.session, &sv));
    f->now += 1000;
    tick(f);
    assert_false(fsmSessionGet(&f->fsm, r.session, &sv));
}

/* Acquire on an unknown or closed session never grants. */
static void test_acquire_dead_session(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    struct fsm_lock_view v;
    struct fsm_result r;

    assert_int_equal(acquire(f, 999, "r").status, TN__STATUS__SESSION_EXPIRED);
    assert_int_equal(closeSession(f, a).status, TN__STATUS__OK);
    r = acquireFull(f, a, "r", 0, 0, 10000, 0);
    assert_int_equal(r.status, TN__STATUS__SESSION_EXPIRED);
    assert_false(r.queued);
    assert_false(lockGet(f, "r", &v));
    assert_int_equal(keepalive(f, a).status, TN__STATUS__SESSION_EXPIRED);
    assert_int_equal(closeSession(f, a).status, TN__STATUS__SESSION_EXPIRED);
}

/* Acquiring a lock the session already holds returns the same token. */
static void test_reacquire_idempotent(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    struct fsm_result r1 = acquire(f, a, "r");
    struct fsm_result r2 = acquire(f, a, "r");
    struct fsm_stats st;

    assert_int_equal(r2.status, TN__STATUS__OK);
    assert_true(r2.replayed);
    assert_int_equal(r2.token, r1.token);
    assert_int_equal(r2.generation, r1.generation);
    fsmStats(&f->fsm, &st);
    assert_int_equal(st.grants, 1);
    /* Another mode is not an upgrade. */
    assert_int_equal(
        acquireFull(f, a, "r", TN__LOCK_MODE__SHARED, 0, 0, 0).status,
        TN__STATUS__INVALID_ARGUMENT);
}

/* Many readers share a lock; a writer waits for all of them. */
static void test_shared_readers(void **state)
{
    struct fixture *f = *state;
    uint64_t r1 = openSession(f, "r1", 5000);
    uint64_t r2 = openSession(f, "r2", 5000);
    uint64_t w = openSession(f, "w", 5000);
    struct fsm_result g1 = acquireFull(f, r1, "db", 1, 0, 0, 0);
    struct fsm_result g2 = acquireFull(f, r2, "db", 1, 0, 0, 0);
    struct fsm_result gw;
    struct fsm_lock_view v;

    assert_int_equal(g1.status, TN__STATUS__OK);
    assert_int_equal(g2.status, TN__STATUS__OK);
    assert_true(g2.token > g1.token);
    assert_int_equal(g2.mode, TN__LOCK_MODE__SHARED);
    assert_true(lockGet(f, "db", &v));
    assert_int_equal(v.mode, TN__LOCK_MODE__SHARED);
    assert_int_equal(v.n_holders, 2);
    assert_int_equal(v.holders[0].token, g1.token);
    assert_int_equal(v.holders[1].token, g2.token);
    gw = acquire(f, w, "db");
    assert_int_equal(gw.status, TN__STATUS__HELD);
    assert_int_equal(gw.holder_session, r1);
    release(f, "db", g1.token);
    assert_int_equal(acquire(f, w, "db").status, TN__STATUS__HELD);
    release(f, "db", g2.token);
    assert_int_equal(acquire(f, w, "db").status, TN__STATUS__OK);
    assert_int_equal(acquireFull(f, r1, "db", 1, 0, 0, 0).status,
                     TN__STATUS__HELD);
}

/* A reader arriving behind a queued writer queues too (writer preference),
 * and hand-offs happen in FIFO order in the same apply. */
static void test_shared_writer_preference(void **state)
{
    struct fixture *f = *state;
    uint64_t r1 = openSession(f, "r1", 5000);
    uint64_t r2 = openSession(f, "r2", 5000);
    uint64_t w = openSession(f, "w", 5000);
    struct fsm_result g1 = acquireFull(f, r1, "db", 1, 0, 0, 0);
    struct fsm_result qw;
    struct fsm_result q2;
    const struct recorded *e;
    struct fsm_lock_view v;
    size_t mark;

    f->client_id = 20;
    f->seq = 1;
    qw = acquireFull(f, w, "db", 0, 0, 60000, 0);
    f->client_id = 21;
    q2 = acquireFull(f, r2, "db", 1, 0, 60000, 0);
    f->client_id = 0;
    assert_true(qw.queued);
    assert_true(q2.queued);
    assert_int_equal(q2.queue_len, 2);
    assert_int_equal(acquireFull(f, r2, "db", 1, 0, 0, 0).status,
                     TN__STATUS__HELD);
    mark = f->n_events;
    release(f, "db", g1.token);
    e = findEvent(f, FSM_EVENT_WAIT_DONE, mark);
    assert_non_null(e);
    assert_int_equal(e->client_id, 20);
    assert_int_equal(e->status, TN__STATUS__OK);
    assert_int_equal(e->session, w);
    assert_null(findEvent(f, FSM_EVENT_WAIT_DONE, (size_t)(e - f->events) + 1));
    assert_true(lockGet(f, "db", &v));
    assert_int_equal(v.mode, TN__LOCK_MODE__EXCLUSIVE);
    assert_int_equal(v.holders[0].session, w);
    assert_int_equal(v.queue_len, 1);
    mark = f->n_events;
    release(f, "db", e->token);
    e = findEvent(f, FSM_EVENT_WAIT_DONE, mark);
    assert_non_null(e);
    assert_int_equal(e->client_id, 21);
    assert_int_equal(e->session, r2);
    assert_true(lockGet(f, "db", &v));
    assert_int_equal(v.mode, TN__LOCK_MODE__SHARED);
}

/* A semaphore grants up to N holders, each with its own token. */
static void test_semaphore_permits(void **state)
{
    struct fixture *f = *state;
    uint64_t s[4];
    struct fsm_result r[4];
    struct fsm_lock_view v;

    for (int i = 0; i < 4; i++) {
        s[i] = openSession(f, "s", 5000);
    }
    r[0] = acquireFull(f, s[0], "pool", 2, 2, 0, 0);
    r[1] = acquireFull(f, s[1], "pool", 2, 2, 0, 0);
    r[2] = acquireFull(f, s[2], "pool", 2, 2, 0, 0);
    assert_int_equal(r[0].status, TN__STATUS__OK);
    assert_int_equal(r[1].status, TN__STATUS__OK);
    assert_int_not_equal(r[0].token, r[1].token);
    assert_int_equal(r[2].status, TN__STATUS__HELD);
    r[3] = acquireFull(f, s[3], "pool", 2, 3, 0, 0);
    assert_int_equal(r[3].status, TN__STATUS__INVALID_ARGUMENT);
    assert_non_null(strstr(r[3].message, "permits"));
    assert_int_equal(acquireFull(f, s[3], "pool", 2, 0, 0, 0).status,
                     TN__STATUS__INVALID_ARGUMENT);
    assert_int_equal(acquire(f, s[3], "pool").status, TN__STATUS__HELD);
    assert_true(lockGet(f, "pool", &v));
    assert_int_equal(v.mode, TN__LOCK_MODE__SEMAPHORE);
    assert_int_equal(v.permits, 2);
    assert_int_equal(v.n_holders, 2);
    release(f, "pool", r[0].token);
    assert_int_equal(acquireFull(f, s[2], "pool", 2, 2, 0, 0).status,
                     TN__STATUS__OK);
    /* Once the semaphore is gone, a new size may be chosen. */
    release(f, "pool", r[1].token);
    closeSession(f, s[2]);
    assert_false(lockGet(f, "pool", &v));
    assert_int_equal(acquireFull(f, s[3], "pool", 2, 5, 0, 0).status,
                     TN__STATUS__OK);
}

/* The next waiter gets the lock in the same apply as the release, in FIFO
 * order, with a WAIT_DONE carrying its (client_id, seq). */
static void test_fifo_handoff(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    uint64_t b = openSession(f, "b", 5000);
    uint64_t c = openSession(f, "c", 5000);
    struct fsm_result ra = acquire(f, a, "r");
    struct fsm_result q;
    const struct recorded *e;
    struct fsm_lock_view v;
    size_t mark;
    uint64_t release_index;

    f->client_id = 100;
    f->seq = 7;
    q = acquireFull(f, b, "r", 0, 0, 30000, 0);
    assert_int_equal(q.status, TN__STATUS__OK);
    assert_true(q.queued);
    assert_int_equal(q.session, b);
    assert_int_equal(q.holder_session, a);
    assert_int_equal(q.queue_len, 1);
    f->client_id = 101;
    f->seq = 1;
    q = acquireFull(f, c, "r", 0, 0, 30000, 0);
    assert_true(q.queued);
    assert_int_equal(q.queue_len, 2);
    f->client_id = 0;
    assert_true(lockGet(f, "r", &v));
    assert_int_equal(v.queue_len, 2);

    mark = f->n_events;
    assert_int_equal(release(f, "r", ra.token).status, TN__STATUS__OK);
    release_index = f->index;
    e = findEvent(f, FSM_EVENT_WAIT_DONE, mark);
    assert_non_null(e);
    assert_int_equal(e->index, release_index);
    assert_int_equal(e->client_id, 100);
    assert_int_equal(e->seq, 7);
    assert_int_equal(e->status, TN__STATUS__OK);
    assert_false(e->queued);
    assert_int_equal(e->token, release_index << 16);
    assert_true(lockGet(f, "r", &v));
    assert_int_equal(v.holders[0].session, b);
    assert_int_equal(v.queue_len, 1);
    assert_int_equal(v.generation, 2);

    mark = f->n_events;
    closeSession(f, b);
    e = findEvent(f, FSM_EVENT_WAIT_DONE, mark);
    assert_non_null(e);
    assert_int_equal(e->client_id, 101);
    assert_true(lockGet(f, "r", &v));
    assert_int_equal(v.holders[0].session, c);
    assert_int_equal(v.queue_len, 0);
}

/* A waiter whose time runs out gets WAIT_DONE(HELD) on the Tick at its
 * deadline, and fsmNextDeadline announced that moment. */
static void test_waiter_timeout(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    uint64_t b = openSession(f, "b", 5000);
    uint64_t deadline;
    const struct recorded *e;
    struct fsm_lock_view v;
    size_t mark;

    assert_int_equal(fsmNextDeadline(&f->fsm), UINT64_MAX);
    acquire(f, a, "r");
    f->client_id = 5;
    f->seq = 1;
    assert_true(acquireFull(f, b, "r", 0, 0, 2000, 0).queued);
    f->client_id = 0;
    deadline = f->now + 2000;
    assert_int_equal(fsmNextDeadline(&f->fsm), deadline);
    mark = f->n_events;
    f->now = deadline - 1;
    tick(f);
    assert_null(findEvent(f, FSM_EVENT_WAIT_DONE, mark));
    f->now = deadline;
    tick(f);
    e = findEvent(f, FSM_EVENT_WAIT_DONE, mark);
    assert_non_null(e);
    assert_int_equal(e->status, TN__STATUS__HELD);
    assert_int_equal(e->client_id, 5);
    assert_true(lockGet(f, "r", &v));
    assert_int_equal(v.queue_len, 0);
    assert_int_equal(fsmNextDeadline(&f->fsm), UINT64_MAX);
}

/* The wait is capped at max_wait_ms. */
static void test_wait_capped(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    uint64_t b = openSession(f, "b", 5000);

    acquire(f, a, "r");
    assert_true(acquireFull(f, b, "r", 0, 0, 4000000000u, 0).queued);
    assert_int_equal(fsmNextDeadline(&f->fsm), f->now + f->config.max_wait_ms);
}

/* A waiter whose session closed is dropped and never granted. */
static void test_waiter_dead_session_dropped(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    uint64_t b = openSession(f, "b", 5000);
    struct fsm_result ra = acquire(f, a, "r");
    const struct recorded *e;
    struct fsm_lock_view v;
    size_t mark;

    assert_true(acquireFull(f, b, "r", 0, 0, 30000, 0).queued);
    mark = f->n_events;
    closeSession(f, b);
    e = findEvent(f, FSM_EVENT_WAIT_DONE, mark);
    assert_non_null(e);
    assert_int_equal(e->status, TN__STATUS__SESSION_EXPIRED);
    mark = f->n_events;
    release(f, "r", ra.token);
    assert_null(findEvent(f, FSM_EVENT_WAIT_DONE, mark));
    assert_false(lockGet(f, "r", &v));
}

/* After an expiry, the lock-delay keeps the resource from everyone until it
 * ends; waiters get in on the Tick at its end. */
static void test_lock_delay(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    uint64_t b = openSession(f, "b", 5000);
    struct fsm_result r;
    struct fsm_lock_view v;
    uint64_t until;
    const struct recorded *e;
    size_t mark;
    struct fsm_stats st;

    acquireFull(f, a, "r", 0, 0, 0, 5000);
    f->now += 100;
    expire(f, a, 1);
    until = f->now + 5000;
    assert_true(lockGet(f, "r", &v));
    assert_int_equal(v.n_holders, 0);
    assert_int_equal(v.lock_delay_until_ms, until);
    assert_int_equal(fsmNextDeadline(&f->fsm), until);
    r = acquire(f, b, "r");
    assert_int_equal(r.status, TN__STATUS__LOCK_DELAY);
    assert_int_equal(r.lock_delay_until_ms, until);
    /* A wait that ends before the delay does is refused at once. */
    r = acquireFull(f, b, "r", 0, 0, 1000, 0);
    assert_int_equal(r.status, TN__STATUS__LOCK_DELAY);
    f->client_id = 3;
    f->seq = 1;
    r = acquireFull(f, b, "r", 0, 0, 10000, 0);
    f->client_id = 0;
    assert_true(r.queued);
    assert_int_equal(r.lock_delay_until_ms, until);
    mark = f->n_events;
    f->now = until - 1;
    tick(f);
    assert_null(findEvent(f, FSM_EVENT_WAIT_DONE, mark));
    f->now = until;
    tick(f);
    e = findEvent(f, FSM_EVENT_WAIT_DONE, mark);
    assert_non_null(e);
    assert_int_equal(e->status, TN__STATUS__OK);
    assert_int_equal(e->client_id, 3);
    assert_true(lockGet(f, "r", &v));
    assert_int_equal(v.holders[0].session, b);
    assert_int_equal(v.lock_delay_until_ms, 0);
    fsmStats(&f->fsm, &st);
    assert_int_equal(st.lock_delay_hits, 2);
}

/* A lock-delay with nobody waiting ends by itself and the lock is free. */
static void test_lock_delay_ends(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    struct fsm_lock_view v;
    size_t mark;

    acquireFull(f, a, "r", 0, 0, 0, 2000);
    expire(f, a, 1);
    assert_true(lockGet(f, "r", &v));
    mark = f->n_events;
    f->now += 2000;
    tick(f);
    assert_false(lockGet(f, "r", &v));
    assert_non_null(findEvent(f, FSM_EVENT_LOCK_CHANGE, mark));
    assert_int_equal(fsmNextDeadline(&f->fsm), UINT64_MAX);
}

/* A clean release or a session close never starts a lock-delay, and the
 * per-request delay is capped. */
static void test_lock_delay_only_on_expiry(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    uint64_t b = openSession(f, "b", 5000);
    struct fsm_result r = acquireFull(f, a, "r", 0, 0, 0, 5000);
    struct fsm_lock_view v;

    release(f, "r", r.token);
    assert_false(lockGet(f, "r", &v));
    acquireFull(f, a, "r", 0, 0, 0, 5000);
    closeSession(f, a);
    assert_false(lockGet(f, "r", &v));
    assert_int_equal(acquire(f, b, "r").status, TN__STATUS__OK);
    assert_int_equal(release(f, "r", r.token).status, TN__STATUS__OK);

    a = openSession(f, "a", 5000);
    acquireFull(f, a, "big", 0, 0, 0, 4000000000u);
    expire(f, a, 1);
    assert_true(lockGet(f, "big", &v));
    assert_int_equal(v.lock_delay_until_ms,
                     f->now + f->config.max_lock_delay_ms);
}

/* A retried (client_id, seq) is answered from the reply table, not applied
 * again. */
static void test_exactly_once_replay(void **state)
{
    struct fixture *f = *state;
    uint64_t a;
    uint64_t a2;
    struct fsm_result r1;
    struct fsm_result r2;
    struct fsm_stats st;

    f->client_id = 77;
    f->seq = 1;
    a = openSession(f, "a", 5000);
    a2 = openSession(f, "a", 5000); /* retry: same session */
    assert_int_equal(a, a2);
    fsmStats(&f->fsm, &st);
    assert_int_equal(st.sessions, 1);
    f->seq = 2;
    r1 = acquire(f, a, "r");
    assert_false(r1.replayed);
    r2 = acquire(f, a, "r");
    assert_true(r2.replayed);
    assert_int_equal(r2.status, TN__STATUS__OK);
    assert_int_equal(r2.token, r1.token);
    assert_int_equal(r2.generation, r1.generation);
    assert_int_equal(r2.session, a);
    f->seq = 3;
    assert_int_equal(release(f, "r", r1.token).status, TN__STATUS__OK);
    f->seq = 2; /* a late duplicate of the acquire must not re-grant */
    r2 = acquire(f, a, "r");
    assert_true(r2.replayed);
    assert_int_equal(r2.token, r1.token);
    fsmStats(&f->fsm, &st);
    assert_int_equal(st.grants, 1);
    assert_int_equal(st.locks_held, 0);
    /* seq 0 is reserved. */
    f->seq = 0;
    assert_int_equal(tick(f).status, TN__STATUS__INVALID_ARGUMENT);
}

/* A retry of a still-queued acquire says queued again without a second
 * queue entry; after the grant, the retry returns the granted token. */
static void test_exactly_once_queued_retry(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    uint64_t b = openSession(f, "b", 5000);
    struct fsm_result ra = acquire(f, a, "r");
    struct fsm_result q;
    const struct recorded *e;
    struct fsm_lock_view v;
    size_t mark;

    f->client_id = 8;
    f->seq = 4;
    q = acquireFull(f, b, "r", 0, 0, 30000, 0);
    assert_true(q.queued);
    assert_false(q.replayed);
    q = acquireFull(f, b, "r", 0, 0, 30000, 0);
    assert_true(q.queued);
    assert_true(q.replayed);
    assert_int_equal(q.holder_session, a);
    assert_true(lockGet(f, "r", &v));
    assert_int_equal(v.queue_len, 1);
    f->client_id = 0;
    mark = f->n_events;
    release(f, "r", ra.token);
    e = findEvent(f, FSM_EVENT_WAIT_DONE, mark);
    assert_non_null(e);
    f->client_id = 8;
    q = acquireFull(f, b, "r", 0, 0, 30000, 0);
    assert_false(q.queued);
    assert_true(q.replayed);
    assert_int_equal(q.status, TN__STATUS__OK);
    assert_int_equal(q.token, e->token);
}

/* Client entries idle past client_ttl_ms are forgotten. */
static void test_client_entry_expiry(void **state)
{
    struct fixture *f = *state;
    uint64_t s1;
    uint64_t s2;

    f->client_id = 42;
    f->seq = 1;
    s1 = openSession(f, "a", 5000);
    f->client_id = 0;
    f->now += f->config.client_ttl_ms;
    tick(f); /* idle exactly client_ttl_ms: still remembered */
    f->client_id = 42;
    assert_int_equal(openSession(f, "a", 5000), s1);
    f->client_id = 0;
    f->now += f->config.client_ttl_ms + 1;
    tick(f);
    f->client_id = 42;
    s2 = openSession(f, "a", 5000);
    assert_int_not_equal(s2, s1);
}

/* Seqs that fell out of a full window are refused, not applied twice. */
static void test_window_floor(void **state)
{
    struct fixture *f = *state;
    uint64_t s;
    struct fsm_result r;

    f->config.client_window = 2;
    reconfigure(f);
    s = openSession(f, "a", 5000);
    f->client_id = 1;
    for (f->seq = 1; f->seq <= 3; f->seq++) {
        assert_int_equal(keepalive(f, s).status, TN__STATUS__OK);
    }
    f->seq = 1;
    r = keepalive(f, s);
    assert_int_equal(r.status, TN__STATUS__INVALID_ARGUMENT);
    assert_non_null(strstr(r.message, "seq"));
    f->seq = 3;
    r = keepalive(f, s);
    assert_true(r.replayed);
    assert_int_equal(r.epoch, 4);
}

/* Tokens are unique and strictly increasing, also inside one entry. */
static void test_tokens_increase(void **state)
{
    struct fixture *f = *state;
    uint64_t s = openSession(f, "a", 5000);
    Tn__Command c[3] = { TN__COMMAND__INIT, TN__COMMAND__INIT,
                         TN__COMMAND__INIT };
    Tn__Acquire a[3] = { TN__ACQUIRE__INIT, TN__ACQUIRE__INIT,
                         TN__ACQUIRE__INIT };
    Tn__Command *p[3];
    struct fsm_result r[3];
    uint64_t last = 0;
    const char *names[3] = { "x", "y", "z" };

    for (int i = 0; i < 3; i++) {
        a[i].session = s;
        a[i].resource = (char *)names[i];
        c[i].body_case = TN__COMMAND__BODY_ACQUIRE;
        c[i].acquire = &a[i];
        p[i] = &c[i];
    }
    applyBatch(f, p, 3, r);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].status, TN__STATUS__OK);
        assert_int_equal(r[i].token, (f->index << 16) + (uint64_t)i);
    }
    last = r[2].token;
    for (int round = 0; round < 50; round++) {
        struct fsm_result g = acquire(f, s, "w");
        assert_true(g.token > last);
        last = g.token;
        release(f, "w", g.token);
    }
}

/* Resource IDs outside the rules are rejected with a message. */
static void test_invalid_resource(void **state)
{
    struct fixture *f = *state;
    uint64_t s = openSession(f, "a", 5000);
    char big[514];
    struct fsm_result r;
    const char *bad[] = { "",     "a\x01",    "del\x7f",      "\xc2\x85",
                          "\xff", "\xc0\xaf", "\xed\xa0\x80", "\xe2\x82" };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = acquire(f, s, bad[i]);
        assert_int_equal(r.status, TN__STATUS__INVALID_ARGUMENT);
        assert_non_null(r.message);
        assert_non_null(strstr(r.message, "resource"));
        assert_int_equal(release(f, bad[i], 1).status,
                         TN__STATUS__INVALID_ARGUMENT);
    }
    memset(big, 'x', 513);
    big[513] = '\0';
    assert_int_equal(acquire(f, s, big).status, TN__STATUS__INVALID_ARGUMENT);
    big[512] = '\0';
    assert_int_equal(acquire(f, s, big).status, TN__STATUS__OK);
    assert_int_equal(acquire(f, s, "caf\xc3\xa9/\xf0\x9f\x94\x92").status,
                     TN__STATUS__OK);
    assert_false(fsmResourceValid("a\nb", 3, NULL));
    assert_true(fsmResourceValid("a b", 3, NULL));
    assert_int_equal(acquireFull(f, s, "m", 7, 0, 0, 0).status,
                     TN__STATUS__INVALID_ARGUMENT);
}

/* Release and renew need a token; a token never granted is invalid. */
static void test_token_required(void **state)
{
    struct fixture *f = *state;
    uint64_t s = openSession(f, "a", 5000);
    struct fsm_result r = acquire(f, s, "r");

    assert_int_equal(release(f, "r", 0).status, TN__STATUS__INVALID_ARGUMENT);
    assert_int_equal(renew(f, "r", 0, 0).status, TN__STATUS__INVALID_ARGUMENT);
    release(f, "r", r.token);
    assert_int_equal(release(f, "r", r.token + 1000).status,
                     TN__STATUS__INVALID_ARGUMENT);
}

/* Renew through a token bumps the epoch, may change the TTL, and emits
 * RENEW; a clean-released token cannot be renewed. */
static void test_renew(void **state)
{
    struct fixture *f = *state;
    uint64_t s = openSession(f, "a", 5000);
    struct fsm_result g = acquire(f, s, "r");
    struct fsm_result r = renew(f, "r", g.token, 20000);
    const struct recorded *e;

    assert_int_equal(r.status, TN__STATUS__OK);
    assert_int_equal(r.epoch, 2);
    assert_int_equal(r.ttl_ms, 20000);
    assert_int_equal(r.token, g.token);
    e = findEvent(f, FSM_EVENT_SESSION_RENEW, 0);
    assert_non_null(e);
    assert_int_equal(e->epoch, 2);
    assert_int_equal(e->ttl_ms, 20000);
    r = renew(f, "r", g.token, 0);
    assert_int_equal(r.ttl_ms, 20000);
    assert_int_equal(r.epoch, 3);
    release(f, "r", g.token);
    assert_int_equal(renew(f, "r", g.token, 0).status,
                     TN__STATUS__LEASE_EXPIRED);
}

/* Closing a session is a clean release: tombstones say released. */
static void test_close_is_clean(void **state)
{
    struct fixture *f = *state;
    uint64_t s = openSession(f, "a", 5000);
    struct fsm_result g = acquireFull(f, s, "r", 0, 0, 0, 3000);
    struct fsm_result r;
    struct fsm_stats st;

    r = closeSession(f, s);
    assert_int_equal(r.status, TN__STATUS__OK);
    assert_int_equal(r.session, s);
    r = release(f, "r", g.token);
    assert_int_equal(r.status, TN__STATUS__OK);
    assert_true(r.replayed);
    fsmStats(&f->fsm, &st);
    assert_int_equal(st.late_requests, 0);
    assert_int_equal(st.sessions, 0);
}

/* Members' addresses are recorded and updated. */
static void test_member_info(void **state)
{
    struct fixture *f = *state;
    const char *rpc;
    const char *http;

    assert_int_equal(member(f, 2, "h2:7102", "h2:7202").status, TN__STATUS__OK);
    assert_int_equal(member(f, 1, "h1:7101", "h1:7201").status, TN__STATUS__OK);
    assert_int_equal(member(f, 2, "h2:8102", "h2:8202").status, TN__STATUS__OK);
    assert_int_equal(member(f, 0, "x", "y").status,
                     TN__STATUS__INVALID_ARGUMENT);
    assert_true(fsmMemberGet(&f->fsm, 2, &rpc, &http));
    assert_string_equal(rpc, "h2:8102");
    assert_string_equal(http, "h2:8202");
    assert_true(fsmMemberGet(&f->fsm, 1, &rpc, &http));
    assert_string_equal(rpc, "h1:7101");
    assert_false(fsmMemberGet(&f->fsm, 3, &rpc, &http));
}

static int collectNames(void *data, const struct fsm_lock_view *l)
{
    char *out = data;

    strncat(out, l->resource, l->resource_len);
    strcat(out, ",");
    return 0;
}

static int countSessions(void *data, const struct fsm_session_view *s)
{
    uint64_t *last = data;

    assert_true(s->id > last[0]);
    last[0] = s->id;
    last[1]++;
    return 0;
}

/* Listing by prefix walks the matching resources in byte order. */
static void test_list_by_prefix(void **state)
{
    struct fixture *f = *state;
    uint64_t s = openSession(f, "a", 5000);
    const char *names[] = { "b/2", "a", "b/1", "b", "c", "b/10", "ba" };
    char out[256] = "";
    uint64_t seen[2] = { 0, 0 };

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        acquire(f, s, names[i]);
    }
    fsmLockForEach(&f->fsm, "b/", 2, collectNames, out);
    assert_string_equal(out, "b/1,b/10,b/2,");
    out[0] = '\0';
    fsmLockForEach(&f->fsm, "", 0, collectNames, out);
    assert_string_equal(out, "a,b,b/1,b/10,b/2,ba,c,");
    out[0] = '\0';
    fsmLockForEach(&f->fsm, "zz", 2, collectNames, out);
    assert_string_equal(out, "");
    openSession(f, "b", 5000);
    fsmSessionForEach(&f->fsm, countSessions, seen);
    assert_int_equal(seen[1], 2);
}

/* Strings in the results of a batch stay valid after the whole batch, even
 * if a later command of it ended the session they name. */
static void test_result_strings_survive_batch(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "holder-with-a-name", 5000);
    uint64_t b = openSession(f, "b", 5000);
    Tn__Command c[2] = { TN__COMMAND__INIT, TN__COMMAND__INIT };
    Tn__Acquire acq = TN__ACQUIRE__INIT;
    Tn__SessionClose cl = TN__SESSION_CLOSE__INIT;
    Tn__Command *p[2] = { &c[0], &c[1] };
    struct fsm_result r[2];

    acquire(f, a, "r");
    acq.session = b;
    acq.resource = "r";
    c[0].body_case = TN__COMMAND__BODY_ACQUIRE;
    c[0].acquire = &acq;
    cl.session = a;
    c[1].body_case = TN__COMMAND__BODY_SESSION_CLOSE;
    c[1].session_close = &cl;
    applyBatch(f, p, 2, r);
    assert_int_equal(r[0].status, TN__STATUS__HELD);
    assert_int_equal(r[1].status, TN__STATUS__OK);
    assert_string_equal(r[0].holder, "holder-with-a-name");
}

/* An acquire queued by one command and granted by a later command of the
 * same batch reports the grant, not "queued" (results are final as of the
 * end of the batch); the WAIT_DONE is emitted as well. */
static void test_same_batch_queue_then_grant(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    uint64_t b = openSession(f, "b", 5000);
    struct fsm_result ra = acquire(f, a, "r");
    Tn__Command c[2] = { TN__COMMAND__INIT, TN__COMMAND__INIT };
    Tn__Acquire acq = TN__ACQUIRE__INIT;
    Tn__Release rel = TN__RELEASE__INIT;
    Tn__Command *p[2] = { &c[0], &c[1] };
    struct fsm_result r[2];
    const struct recorded *e;
    size_t mark = f->n_events;

    acq.session = b;
    acq.resource = "r";
    acq.wait_ms = 10000;
    c[0].client_id = 30;
    c[0].seq = 1;
    c[0].body_case = TN__COMMAND__BODY_ACQUIRE;
    c[0].acquire = &acq;
    rel.resource = "r";
    rel.token = ra.token;
    c[1].body_case = TN__COMMAND__BODY_RELEASE;
    c[1].release = &rel;
    applyBatch(f, p, 2, r);
    assert_int_equal(r[1].status, TN__STATUS__OK);
    assert_int_equal(r[0].status, TN__STATUS__OK);
    assert_false(r[0].queued);
    assert_false(r[0].replayed);
    assert_int_equal(r[0].session, b);
    assert_int_equal(r[0].token, f->index << 16);
    e = findEvent(f, FSM_EVENT_WAIT_DONE, mark);
    assert_non_null(e);
    assert_int_equal(e->token, r[0].token);
    /* The reply table has the final answer too. */
    f->client_id = 30;
    f->seq = 1;
    r[0] = acquireFull(f, b, "r", 0, 0, 10000, 0);
    assert_true(r[0].replayed);
    assert_false(r[0].queued);
    assert_int_equal(r[0].token, e->token);
}

/* A retry of a waiting acquire, in the same batch as the release that
 * grants it, also reports the grant. */
static void test_same_batch_retry_then_grant(void **state)
{
    struct fixture *f = *state;
    uint64_t a = openSession(f, "a", 5000);
    uint64_t b = openSession(f, "b", 5000);
    struct fsm_result ra = acquire(f, a, "r");
    Tn__Command c[2] = { TN__COMMAND__INIT, TN__COMMAND__INIT };
    Tn__Acquire acq = TN__ACQUIRE__INIT;
    Tn__Release rel = TN__RELEASE__INIT;
    Tn__Command *p[2] = { &c[0], &c[1] };
    struct fsm_result r[2];

    f->client_id = 31;
    f->seq = 1;
    assert_true(acquireFull(f, b, "r", 0, 0, 10000, 0).queued);
    f->client_id = 0;
    acq.session = b;
    acq.resource = "r";
    acq.wait_ms = 10000;
    c[0].client_id = 31;
    c[0].seq = 1;
    c[0].body_case = TN__COMMAND__BODY_ACQUIRE;
    c[0].acquire = &acq;
    rel.resource = "r";
    rel.token = ra.token;
    c[1].body_case = TN__COMMAND__BODY_RELEASE;
    c[1].release = &rel;
    applyBatch(f, p, 2, r);
    assert_int_equal(r[0].status, TN__STATUS__OK);
    assert_false(r[0].queued);
    assert_true(r[0].replayed);
    assert_int_equal(r[0].token, f->index << 16);
}

/* Cluster time and term never go backwards. */
static void test_time_monotonic(void **state)
{
    struct fixture *f = *state;

    tick(f);
    assert_int_equal(fsmNow(&f->fsm), f->now);
    assert_int_equal(fsmIndex(&f->fsm), f->index);
    f->now -= 500;
    f->term = 0;
    tick(f);
    assert_int_equal(fsmNow(&f->fsm), f->now + 500);
    assert_int_equal(fsmTerm(&f->fsm), 1);
}

/* An empty or malformed batch changes nothing and never crashes. */
static void test_malformed_commands(void **state)
{
    struct fixture *f = *state;
    Tn__Command c = TN__COMMAND__INIT;
    Tn__Command *p[1] = { NULL };
    struct fsm_result r;
    Tn__Batch empty = TN__BATCH__INIT;

    r = applyCmd(f, &c);
    assert_int_equal(r.status, TN__STATUS__INVALID_ARGUMENT);
    c.body_case = TN__COMMAND__BODY_ACQUIRE; /* with a NULL body */
    r = applyCmd(f, &c);
    assert_int_equal(r.status, TN__STATUS__INVALID_ARGUMENT);
    applyBatch(f, p, 1, &r);
    assert_int_equal(r.status, TN__STATUS__INVALID_ARGUMENT);
    fsmApply(&f->fsm, ++f->index, &empty, NULL);
    assert_int_equal(fsmIndex(&f->fsm), f->index);
}

/* ------------------------------------------------------------ snapshots */

/* Build a state that uses every structure. */
static void buildRichState(struct fixture *f)
{
    uint64_t a = openSession(f, "alice", 5000);
    uint64_t b = openSession(f, "bob", 6000);
    uint64_t c = openSession(f, "carol", 7000);
    uint64_t d = openSession(f, "dave", 8000);
    struct fsm_result g;

    member(f, 1, "h1:1", "h1:2");
    member(f, 3, "h3:1", "h3:2");
    acquire(f, a, "x/1");
    acquireFull(f, b, "x/2", TN__LOCK_MODE__SHARED, 0, 0, 0);
    acquireFull(f, c, "x/2", TN__LOCK_MODE__SHARED, 0, 0, 0);
    acquireFull(f, a, "sem", TN__LOCK_MODE__SEMAPHORE, 3, 0, 0);
    acquireFull(f, b, "sem", TN__LOCK_MODE__SEMAPHORE, 3, 0, 2000);
    f->client_id = 11;
    f->seq = 1;
    acquireFull(f, b, "x/1", 0, 0, 50000, 0);
    f->seq = 2;
    acquireFull(f, c, "x/1", TN__LOCK_MODE__SHARED, 0, 40000, 0);
    f->client_id = 12;
    f->seq = 9;
    acquireFull(f, d, "x/2", 0, 0, 45000, 1000);
    f->client_id = 0;
    g = acquire(f, d, "gone");
    release(f, "gone", g.token);
    acquireFull(f, d, "delayed", 0, 0, 0, 30000);
    acquireEphemeral(f, "eph", 9000, "e/1", 0);
    keepalive(f, c);
    expire(f, d, 1); /* delayed and x/2 waiter of d go */
    f->client_id = 13;
    f->seq = 1;
    acquireFull(f, a, "delayed", 0, 0, 60000, 0);
    f->client_id = 0;
    f->now += 10;
    tick(f);
}

static struct fsm_result restoreCmd(struct fixture *f,
                                    const void *buf,
                                    size_t len)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__SnapshotRestore sr = TN__SNAPSHOT_RESTORE__INIT;

    sr.snapshot.data = (uint8_t *)buf;
    sr.snapshot.len = len;
    c.body_case = TN__COMMAND__BODY_RESTORE;
    c.restore = &sr;
    return applyCmd(f, &c);
}

struct answers
{
    int status[16];
    uint64_t token[16];
    size_t n;
};

/* Apply the same follow-up commands and record the answers. */
static void followUp(struct fixture *f, struct answers *out)
{
    struct fsm_lock_view v;
    struct fsm_result r;

    memset(out, 0, sizeof *out);
    f->now += 1000;
    r = tick(f);
    out->status[out->n] = r.status;
    out->token[out->n++] = 0;
    assert_true(lockGet(f, "x/1", &v));
    r = release(f, "x/1", v.holders[0].token);
    out->status[out->n] = r.status;
    out->token[out->n++] = r.token;
    f->client_id = 11;
    f->seq = 1;
    r = acquireFull(f, 0, "x/1", 0, 0, 50000, 0);
    out->status[out->n] = r.status;
    out->token[out->n++] = r.token;
    f->client_id = 0;
    f->now += 40000;
    r = tick(f);
    out->status[out->n] = r.status;
    out->token[out->n++] = r.token;
    r = acquire(f, 999, "zzz");
    out->status[out->n] = r.status;
    out->token[out->n++] = r.token;
    assert_true(lockGet(f, "x/1", &v));
    out->status[out->n] = (int)v.n_holders;
    out->token[out->n++] = v.holders[0].token;
}

/* A snapshot restored elsewhere gives the same answers and the same
 * snapshot bytes. */
static void test_snapshot_round_trip(void **state)
{
    struct fixture *f = *state;
    struct fixture *g = calloc(1, sizeof *g);
    void *s1;
    void *s2;
    void *s3;
    void *s4;
    size_t n1;
    size_t n2;
    size_t n3;
    size_t n4;
    struct answers a1;
    struct answers a2;
    struct fsm_stats st1;
    struct fsm_stats st2;
    struct fsm_lock_view v;

    assert_non_null(g);
    buildRichState(f);
    snapshotOf(&f->fsm, &s1, &n1);

    *g = *f;
    g->n_events = 0;
    fixtureStart(g);
    assert_int_equal(fsmRestore(&g->fsm, s1, n1), 0);
    snapshotOf(&g->fsm, &s2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(s1, s2, n1);
    assert_int_equal(fsmIndex(&g->fsm), fsmIndex(&f->fsm));
    assert_int_equal(fsmNow(&g->fsm), fsmNow(&f->fsm));
    assert_int_equal(fsmTerm(&g->fsm), fsmTerm(&f->fsm));
    assert_int_equal(fsmNextDeadline(&g->fsm), fsmNextDeadline(&f->fsm));
    fsmStats(&f->fsm, &st1);
    fsmStats(&g->fsm, &st2);
    assert_memory_equal(&st1, &st2, sizeof st1);
    assert_true(lockGet(g, "delayed", &v));
    assert_true(v.lock_delay_until_ms > 0);
    assert_int_equal(v.queue_len, 1);

    followUp(f, &a1);
    followUp(g, &a2);
    assert_int_equal(a1.n, a2.n);
    assert_memory_equal(a1.status, a2.status, sizeof a1.status);
    assert_memory_equal(a1.token, a2.token, sizeof a1.token);
    snapshotOf(&f->fsm, &s3, &n3);
    snapshotOf(&g->fsm, &s4, &n4);
    assert_int_equal(n3, n4);
    assert_memory_equal(s3, s4, n3);
    assert_int_equal(f->n_events > 0, g->n_events > 0);

    free(s1);
    free(s2);
    free(s3);
    free(s4);
    fsmClose(&g->fsm);
    free(g);
}

/* Restoring the snapshot of an empty FSM works and empties a busy one. */
static void test_snapshot_empty(void **state)
{
    struct fixture *f = *state;
    struct fsm empty;
    void *buf;
    size_t len;
    struct fsm_stats st;

    assert_int_equal(fsmInit(&empty, &f->config), 0);
    snapshotOf(&empty, &buf, &len);
    buildRichState(f);
    assert_int_equal(fsmRestore(&f->fsm, buf, len), 0);
    fsmStats(&f->fsm, &st);
    assert_int_equal(st.sessions, 0);
    assert_int_equal(st.locks_held, 0);
    assert_int_equal(fsmIndex(&f->fsm), 0);
    free(buf);
    fsmClose(&empty);
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static void putLe64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);

    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static void reseal(uint8_t *p, size_t n)
{
    putLe64(p + n - 8, fnv(p, n - 8));
}

static int collectSession(void *data, const struct fsm_session_view *s)
{
    uint64_t *ids = data;

    if (ids[0] < 63) {
        ids[1 + ids[0]++] = s->id;
        ids[64 + ids[0] - 1] = s->epoch;
    }
    return 0;
}

static int releaseFirstHolder(void *data, const struct fsm_lock_view *l)
{
    uint64_t *out = data;

    if (l->n_holders > 0 && out[0] == 0 && l->resource_len < 64) {
        out[0] = l->holders[0].token;
        memcpy(&out[1], l->resource, l->resource_len);
        ((char *)&out[1])[l->resource_len] = '\0';
    }
    return 0;
}

/* Drive a (possibly odd) restored state through every kind of change. */
static void shake(struct fixture *f)
{
    uint64_t ids[128] = { 0 };
    uint64_t first[10];

    f->n_events = 0;
    f->now = fsmNow(&f->fsm) + 1;
    f->term = fsmTerm(&f->fsm);
    memset(first, 0, sizeof first);
    fsmLockForEach(&f->fsm, "", 0, releaseFirstHolder, first);
    if (first[0] != 0) {
        release(f, (const char *)&first[1], first[0]);
        renew(f, (const char *)&first[1], first[0], 0);
    }
    acquire(f, 1, "x/1");
    fsmSessionForEach(&f->fsm, collectSession, ids);
    for (uint64_t i = 0; i < ids[0]; i++) {
        keepalive(f, ids[1 + i]);
        if (i % 2 == 0) {
            expire(f, ids[1 + i], ids[64 + i] + 1);
        } else {
            closeSession(f, ids[1 + i]);
        }
    }
    f->now += 100000000;
    tick(f);
}

/* The Restore command loads a saved table into a fresh cluster: same locks
 * and sessions (announced), this cluster's index and members, and tokens
 * that keep rising past the saved ones. */
static void test_restore_command(void **state)
{
    struct fixture *f = *state;
    struct fixture *g = calloc(1, sizeof *g);
    void *saved;
    size_t n;
    struct fsm_lock_view v;
    struct fsm_lock_view w;
    struct fsm_stats st1;
    struct fsm_stats st2;
    const char *rpc;
    const char *http;
    struct fsm_result r;
    uint64_t s;

    assert_non_null(g);
    buildRichState(f);
    snapshotOf(&f->fsm, &saved, &n);

    g->config = f->config;
    fixtureStart(g);
    g->index = 5;
    g->now = f->now + 60000;
    g->term = 1;
    member(g, 7, "new:1", "new:2");
    r = restoreCmd(g, "junk", 4);
    assert_int_equal(r.status, TN__STATUS__INVALID_ARGUMENT);
    g->n_events = 0;
    r = restoreCmd(g, saved, n);
    assert_int_equal(r.status, TN__STATUS__OK);
    assert_int_equal(fsmIndex(&g->fsm), g->index);
    assert_int_equal(fsmTerm(&g->fsm), f->term);
    assert_int_equal(fsmNow(&g->fsm), g->now);
    assert_true(fsmMemberGet(&g->fsm, 7, &rpc, &http));
    assert_string_equal(rpc, "new:1");
    assert_false(fsmMemberGet(&g->fsm, 1, &rpc, &http));
    fsmStats(&f->fsm, &st1);
    fsmStats(&g->fsm, &st2);
    assert_int_equal(st2.sessions, st1.sessions);
    assert_int_equal(countEvents(g, FSM_EVENT_SESSION_OPEN), st1.sessions);
    assert_true(countEvents(g, FSM_EVENT_LOCK_CHANGE) > 0);
    assert_true(lockGet(f, "x/2", &v));
    assert_true(lockGet(g, "x/2", &w));
    assert_int_equal(w.n_holders, v.n_holders);
    assert_int_equal(w.holders[0].token, v.holders[0].token);
    /* Deadlines that passed while the table was saved away fire at once,
     * in order: the lock-delay on "delayed" ended before its waiter's
     * deadline, so the waiter got it; the other waits ran out. */
    assert_int_equal(st2.waiters, 0);
    assert_int_equal(st2.locks_held, st1.locks_held + 1);
    assert_true(lockGet(g, "delayed", &w));
    assert_int_equal(w.n_holders, 1);
    assert_int_equal(w.lock_delay_until_ms, 0);
    /* New grants go past every saved token. */
    s = openSession(g, "after", 5000);
    r = acquire(g, s, "brand-new");
    assert_int_equal(r.status, TN__STATUS__OK);
    assert_true(r.token > v.last_token);
    assert_true(s > v.holders[0].session);
    /* Not on a cluster that has a lock table already. */
    r = restoreCmd(g, saved, n);
    assert_int_equal(r.status, TN__STATUS__REFUSED);
    assert_true(lockGet(g, "brand-new", &w));
    free(saved);
    fsmClose(&g->fsm);
    free(g);
}

/* Truncated, corrupted or re-sealed-but-wrong snapshots are rejected and
 * leave the state as it was. */
static void test_restore_rejects_corruption(void **state)
{
    struct fixture *f = *state;
    void *good;
    size_t n;
    void *before;
    size_t n_before;
    void *after;
    size_t n_after;
    uint8_t *p;
    uint32_t x = 2463534242u;
    int accepted = 0;

    buildRichState(f);
    snapshotOf(&f->fsm, &good, &n);
    snapshotOf(&f->fsm, &before, &n_before);
    p = malloc(n + 8);
    assert_non_null(p);

    assert_int_equal(fsmRestore(&f->fsm, NULL, 0),
                     TN__STATUS__INVALID_ARGUMENT);
    for (size_t len = 0; len < n; len++) {
        memcpy(p, good, len);
        assert_int_equal(fsmRestore(&f->fsm, p, len),
                         TN__STATUS__INVALID_ARGUMENT);
        if (len >= 16) {
            /* Even with a valid checksum over the truncated body. */
            reseal(p, len);
            assert_int_equal(fsmRestore(&f->fsm, p, len),
                             TN__STATUS__INVALID_ARGUMENT);
        }
    }
    /* Every single-bit flip is caught by the checksum. */
    memcpy(p, good, n);
    for (size_t i = 0; i < n; i++) {
        p[i] ^= 0x10;
        assert_int_equal(fsmRestore(&f->fsm, p, n),
                         TN__STATUS__INVALID_ARGUMENT);
        p[i] ^= 0x10;
    }
    /* Bad magic and version, re-sealed. */
    p[0] ^= 1;
    reseal(p, n);
    assert_int_equal(fsmRestore(&f->fsm, p, n), TN__STATUS__INVALID_ARGUMENT);
    p[0] ^= 1;
    p[4] = (uint8_t)(((const uint8_t *)good)[4] + 1); /* a future version */
    reseal(p, n);
    assert_int_equal(fsmRestore(&f->fsm, p, n), TN__STATUS__INVALID_ARGUMENT);
    p[4] = ((const uint8_t *)good)[4];
    /* Trailing bytes, re-sealed. */
    memcpy(p, good, n - 8);
    memset(p + n - 8, 0, 8);
    reseal(p, n + 8);
    assert_int_equal(fsmRestore(&f->fsm, p, n + 8),
                     TN__STATUS__INVALID_ARGUMENT);
    /* Random mutations behind a valid checksum: never crash; whatever is
     * accepted must snapshot and restore again. */
    for (int round = 0; round < 20000; round++) {
        memcpy(p, good, n);
        for (int k = 0; k < 1 + round % 4; k++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            p[8 + x % (n - 16)] = (uint8_t)(x >> 8);
        }
        reseal(p, n);
        if (fsmRestore(&f->fsm, p, n) == 0) {
            void *again;
            size_t n_again;
            snapshotOf(&f->fsm, &again, &n_again);
            assert_int_equal(fsmRestore(&f->fsm, again, n_again), 0);
            shake(f);
            f->n_events = 0;
            free(again);
            accepted++;
            assert_int_equal(fsmRestore(&f->fsm, good, n), 0);
        }
    }
    assert_true(accepted > 10); /* the mutations reached deep fields */
    assert_int_equal(fsmRestore(&f->fsm, good, n), 0);
    snapshotOf(&f->fsm, &after, &n_after);
    assert_int_equal(n_before, n_after);
    assert_memory_equal(before, after, n_before);
    assert_int_equal(le64((uint8_t *)good + n - 8), fnv(good, n - 8));
    free(p);
    free(good);
    free(before);
    free(after);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setUp, tearDown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_session_open),
        T(test_session_open_bad_holder),
        T(test_acquire_grants),
        T(test_conflict_reports_holder),
        T(test_release_by_token),
        T(test_release_idempotent),
        T(test_stale_token_mismatch),
        T(test_lease_expired_after_expiry),
        T(test_expiry_releases_everything),
        T(test_expiry_old_epoch_ignored),
        T(test_expiry_stale_term_ignored),
        T(test_ephemeral_session),
        T(test_ephemeral_waiter_timeout),
        T(test_acquire_dead_session),
        T(test_reacquire_idempotent),
        T(test_shared_readers),
        T(test_shared_writer_preference),
        T(test_semaphore_permits),
        T(test_fifo_handoff),
        T(test_waiter_timeout),
        T(test_wait_capped),
        T(test_waiter_dead_session_dropped),
        T(test_lock_delay),
        T(test_lock_delay_ends),
        T(test_lock_delay_only_on_expiry),
        T(test_exactly_once_replay),
        T(test_exactly_once_queued_retry),
        T(test_client_entry_expiry),
        T(test_window_floor),
        T(test_tokens_increase),
        T(test_invalid_resource),
        T(test_token_required),
        T(test_renew),
        T(test_close_is_clean),
        T(test_member_info),
        T(test_list_by_prefix),
        T(test_result_strings_survive_batch),
        T(test_same_batch_queue_then_grant),
        T(test_same_batch_retry_then_grant),
        T(test_time_monotonic),
        T(test_malformed_commands),
        T(test_snapshot_round_trip),
        T(test_snapshot_empty),
        T(test_restore_command),
        T(test_restore_rejects_corruption),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
