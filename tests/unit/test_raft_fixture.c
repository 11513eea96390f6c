/* Deterministic cluster scenarios in virtual time (raft/fixture.h), with the
 * real state machine and entry codec behind the daemon's raft_fsm glue. */
#include "lib/test.h"

#include <stdlib.h>
#include <string.h>

#include <raft.h>
#include <raft/fixture.h>

#include "command.h"
#include "fsm.h"
#include "raft_adapter.h"

#define N_SERVERS 3

struct fixture
{
    struct raft_fixture cluster;
    struct raft_fsm rfsm[N_SERVERS];
    struct adapter_fsm wrap[N_SERVERS];
    struct fsm fsm[N_SERVERS];
    struct raft_apply req; /* must outlive its callback: not on the stack */
    int applied_status;
    bool applied;
    uint64_t now_ms;
};

static int setUp(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    struct fsm_config fc;
    struct raft_configuration conf;

    fsmConfigDefaults(&fc);
    assert_int_equal(raft_fixture_initialize(&f->cluster), 0);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        assert_int_equal(fsmInit(&f->fsm[i], &fc), 0);
        adapterFsmInit(&f->wrap[i], &f->rfsm[i], &f->fsm[i], NULL);
        assert_int_equal(raft_fixture_grow(&f->cluster, &f->rfsm[i]), 0);
        f->wrap[i].raft = raft_fixture_get(&f->cluster, i);
        raft_fixture_get(&f->cluster, i)->tracer = NULL;
    }
    assert_int_equal(raft_fixture_configuration(&f->cluster, N_SERVERS, &conf),
                     0);
    assert_int_equal(raft_fixture_bootstrap(&f->cluster, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&f->cluster), 0);
    f->now_ms = 1700000000000ULL;
    *state = f;
    return 0;
}

static int tearDown(void **state)
{
    struct fixture *f = *state;
    raft_fixture_close(&f->cluster);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        fsmClose(&f->fsm[i]);
    }
    free(f);
    return 0;
}

/* Index of the live leader, or N_SERVERS. (The fixture's own leader index
 * may still name a killed server.) */
static unsigned liveLeader(struct fixture *f)
{
    for (unsigned i = 0; i < N_SERVERS; i++) {
        if (raft_fixture_alive(&f->cluster, i) &&
            raft_state(raft_fixture_get(&f->cluster, i)) == RAFT_LEADER) {
            return i;
        }
    }
    return N_SERVERS;
}

static void applyCb(struct raft_apply *req, int status, void *result)
{
    struct fixture *f = req->data;
    (void)result;
    f->applied = true;
    f->applied_status = status;
}

/* Propose one command through the current leader and wait until every live
 * server applied it. */
static void propose(struct fixture *f, Tn__Command *cmd)
{
    unsigned leader = liveLeader(f);
    struct raft *r;
    Tn__Batch batch = TN__BATCH__INIT;
    Tn__Command *cmds[1] = { cmd };
    struct raft_buffer buf;
    raft_index index;

    assert_true(leader < N_SERVERS);
    r = raft_fixture_get(&f->cluster, leader);
    f->now_ms += 10;
    batch.version = 1;
    batch.term = raft_current_term(r);
    batch.now_ms = f->now_ms;
    batch.proposer = leader + 1;
    batch.nonce = f->now_ms;
    batch.n_commands = 1;
    batch.commands = cmds;
    assert_int_equal(commandEncode(&batch, raft_malloc, &buf.base, &buf.len),
                     0);
    assert_int_equal(buf.len % 8, 0);
    f->applied = false;
    f->req.data = f;
    assert_int_equal(raft_apply(r, &f->req, &buf, 1, applyCb), 0);
    index = raft_last_index(r);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        if (raft_fixture_alive(&f->cluster, i)) {
            assert_true(
                raft_fixture_step_until_applied(&f->cluster, i, index, 5000));
        }
    }
    assert_true(f->applied);
    assert_int_equal(f->applied_status, 0);
}

struct findSession
{
    const char *holder;
    uint64_t id;
};

static int findSessionCb(void *data, const struct fsm_session_view *s)
{
    struct findSession *fs = data;
    if (s->holder != NULL && strcmp(s->holder, fs->holder) == 0) {
        fs->id = s->id;
        return 1;
    }
    return 0;
}

static uint64_t openSession(struct fixture *f, const char *holder)
{
    Tn__Command cmd = TN__COMMAND__INIT;
    Tn__SessionOpen open = TN__SESSION_OPEN__INIT;
    struct findSession fs = { holder, 0 };
    unsigned leader = liveLeader(f);

    open.holder = (char *)holder;
    open.ttl_ms = 10000;
    cmd.body_case = TN__COMMAND__BODY_SESSION_OPEN;
    cmd.session_open = &open;
    propose(f, &cmd);
    fsmSessionForEach(&f->fsm[leader], findSessionCb, &fs);
    assert_int_not_equal(fs.id, 0);
    return fs.id;
}

static void acquire(struct fixture *f, uint64_t session, const char *res)
{
    Tn__Command cmd = TN__COMMAND__INIT;
    Tn__Acquire acq = TN__ACQUIRE__INIT;
    acq.session = session;
    acq.resource = (char *)res;
    cmd.body_case = TN__COMMAND__BODY_ACQUIRE;
    cmd.acquire = &acq;
    propose(f, &cmd);
}

static void release(struct fixture *f, const char *res, uint64_t token)
{
    Tn__Command cmd = TN__COMMAND__INIT;
    Tn__Release rel = TN__RELEASE__INIT;
    rel.resource = (char *)res;
    rel.token = token;
    cmd.body_case = TN__COMMAND__BODY_RELEASE;
    cmd.release = &rel;
    propose(f, &cmd);
}

/* The token currently held on @res as seen by server @i (0 if free). */
static uint64_t heldToken(struct fixture *f, unsigned i, const char *res)
{
    struct fsm_lock_view v;
    if (!fsmLockGet(&f->fsm[i], res, strlen(res), &v) || v.n_holders == 0) {
        return 0;
    }
    return v.holders[0].token;
}

static bool sameSnapshots(struct fixture *f, unsigned a, unsigned b)
{
    void *ba;
    void *bb;
    size_t la;
    size_t lb;
    bool same;
    assert_int_equal(fsmSnapshot(&f->fsm[a], &ba, &la), 0);
    assert_int_equal(fsmSnapshot(&f->fsm[b], &bb, &lb), 0);
    same = la == lb && memcmp(ba, bb, la) == 0;
    free(ba);
    free(bb);
    return same;
}

/* Stop condition: a live server other than *arg leads. */
static bool otherLeader(struct raft_fixture *c, void *arg)
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

/* A lock and its token survive the crash of the leader: the new leader
 * holds the same lock with the same token, the next grant gets a larger
 * token, and the revived old leader converges to identical state. */
static void test_leader_crash_keeps_locks(void **state)
{
    struct fixture *f = *state;
    uint64_t s1, s2, t1, t2;
    unsigned old, leader;

    raft_fixture_elect(&f->cluster, 0);
    s1 = openSession(f, "alpha");
    acquire(f, s1, "orders/42");
    t1 = heldToken(f, 0, "orders/42");
    assert_int_not_equal(t1, 0);
    for (unsigned i = 1; i < N_SERVERS; i++) {
        assert_int_equal(heldToken(f, i, "orders/42"), t1);
    }

    old = liveLeader(f);
    raft_fixture_kill(&f->cluster, old);
    assert_true(raft_fixture_step_until(&f->cluster, otherLeader, &old, 10000));
    leader = liveLeader(f);
    assert_int_not_equal(leader, old);
    assert_int_equal(heldToken(f, leader, "orders/42"), t1);

    /* A second session cannot take it while it is held. */
    s2 = openSession(f, "beta");
    acquire(f, s2, "orders/42");
    assert_int_equal(heldToken(f, leader, "orders/42"), t1);

    release(f, "orders/42", t1);
    assert_int_equal(heldToken(f, leader, "orders/42"), 0);
    acquire(f, s2, "orders/42");
    t2 = heldToken(f, leader, "orders/42");
    assert_true(t2 > t1);

    raft_fixture_revive(&f->cluster, old);
    assert_true(raft_fixture_step_until_applied(
        &f->cluster, old, fsmIndex(&f->fsm[leader]), 10000));
    assert_int_equal(heldToken(f, old, "orders/42"), t2);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        assert_true(sameSnapshots(f, i, leader));
    }
}

/* A server that missed entries catches up from a snapshot install and ends
 * with byte-identical state (tokens included). */
static void test_snapshot_install_converges(void **state)
{
    struct fixture *f = *state;
    uint64_t s;
    char res[32];

    for (unsigned i = 0; i < N_SERVERS; i++) {
        raft_set_snapshot_threshold(raft_fixture_get(&f->cluster, i), 8);
        raft_set_snapshot_trailing(raft_fixture_get(&f->cluster, i), 2);
    }
    raft_fixture_elect(&f->cluster, 0);
    raft_fixture_kill(&f->cluster, 2);
    s = openSession(f, "gamma");
    for (unsigned k = 0; k < 30; k++) {
        snprintf(res, sizeof res, "r/%u", k);
        acquire(f, s, res);
    }
    raft_fixture_revive(&f->cluster, 2);
    assert_true(raft_fixture_step_until_applied(&f->cluster, 2,
                                                fsmIndex(&f->fsm[0]), 20000));
    assert_true(sameSnapshots(f, 0, 2));
    assert_int_equal(heldToken(f, 2, "r/29"), heldToken(f, 0, "r/29"));
    assert_int_not_equal(heldToken(f, 2, "r/29"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_leader_crash_keeps_locks, setUp,
                                        tearDown),
        cmocka_unit_test_setup_teardown(test_snapshot_install_converges, setUp,
                                        tearDown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
