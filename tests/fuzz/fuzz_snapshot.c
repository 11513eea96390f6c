/* Fuzz target: snapshot restore (fsmRestore, server/fsm.c).
 *
 * Input: the body of a snapshot without its trailer. The harness restores
 *   - the input as it is (its last 8 bytes taken as the checksum: almost
 *     always refused, which must be harmless), and
 *   - the input followed by its FNV-1a 64 (little-endian), so that fuzzed
 *     bodies get past the checksum and into the parser.
 * A snapshot that restores must describe a table that keeps the lock-table
 * invariants (fsm_util.c) and survives what a replica does next:
 * snapshot -> restore -> snapshot byte-identical; its read views walked;
 * time advanced to its next deadline and far beyond; every session expired
 * (no lock may still have a holder afterwards); the round trip again. The
 * Restore command (operator snapshot load) must accept exactly the
 * snapshots fsmRestore accepts. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fsm.h"
#include "fsm_util.h"
#include "fuzz.h"

#define MAX_EXPIRE 256

struct sessions
{
    uint64_t id[MAX_EXPIRE];
    uint64_t epoch[MAX_EXPIRE];
    size_t n;
};

static int sessionCb(void *data, const struct fsm_session_view *s)
{
    struct sessions *ss = data;
    FUZZ_CHECK(s->id != 0, "session id 0");
    FUZZ_CHECK(s->holder != NULL, "session without a holder string");
    if (ss->n < MAX_EXPIRE) {
        ss->id[ss->n] = s->id;
        ss->epoch[ss->n] = s->epoch;
        ss->n++;
    }
    return 0;
}

static int memberCb(void *data, const struct fsm_member_view *m)
{
    (void)data;
    FUZZ_CHECK(m->id != 0, "member id 0");
    return 0;
}

static int heldCb(void *data, const struct fsm_lock_view *v)
{
    (void)data;
    FUZZ_CHECK(v->n_holders == 0,
               "a lock still has %u holders after every session expired",
               v->n_holders);
    return 0;
}

static void applyTick(struct fsm *f, uint64_t now_ms)
{
    Tn__Command c = TN__COMMAND__INIT;
    Tn__Tick t = TN__TICK__INIT;
    Tn__Command *cp = &c;
    Tn__Batch b;

    c.body_case = TN__COMMAND__BODY_TICK;
    c.tick = &t;
    fuzzBatchInit(&b, &cp, 1, now_ms);
    b.term = fsmTerm(f);
    fuzzFsmApply(f, fsmIndex(f) + 1, &b, NULL);
}

static void expireAll(struct fsm *f, const struct sessions *ss)
{
    Tn__Command *cmds = calloc(ss->n + 1, sizeof *cmds);
    Tn__Command **cp = calloc(ss->n + 1, sizeof *cp);
    Tn__SessionExpire *ex = calloc(ss->n + 1, sizeof *ex);
    struct fsm_result *res = calloc(ss->n + 1, sizeof *res);
    Tn__Batch b;

    FUZZ_CHECK(cmds && cp && ex && res, "out of memory");
    for (size_t i = 0; i < ss->n; i++) {
        tn__command__init(&cmds[i]);
        tn__session_expire__init(&ex[i]);
        ex[i].session = ss->id[i];
        ex[i].epoch = ss->epoch[i];
        cmds[i].body_case = TN__COMMAND__BODY_SESSION_EXPIRE;
        cmds[i].session_expire = &ex[i];
        cp[i] = &cmds[i];
    }
    fuzzBatchInit(&b, cp, ss->n, fsmNow(f));
    b.term = fsmTerm(f);
    fuzzFsmApply(f, fsmIndex(f) + 1, &b, res);
    for (size_t i = 0; i < ss->n; i++) {
        /* Ephemeral sessions may end with an earlier one's locks. */
        FUZZ_CHECK(res[i].status == TN__STATUS__OK ||
                       res[i].status == TN__STATUS__SESSION_EXPIRED,
                   "expire of session %llu: %d",
                   (unsigned long long)ss->id[i], res[i].status);
    }
    free(cmds);
    free(cp);
    free(ex);
    free(res);
}

/* What a replica does with a table it restored. */
static void exercise(struct fsm *f)
{
    struct sessions *ss = calloc(1, sizeof *ss);
    struct fsm_stats st;
    uint64_t next;
    uint64_t now = fsmNow(f);

    FUZZ_CHECK(ss != NULL, "out of memory");
    fuzzFsmCheck(f);
    fuzzSnapshotRoundTrip(f, NULL, NULL);
    fsmMemberForEach(f, memberCb, NULL);
    fsmStats(f, &st);
    if (fsmIndex(f) >= (UINT64_C(1) << 46) || now >= (UINT64_C(1) << 61)) {
        /* Beyond any index or clock a cluster reaches; applying more
         * would only test counter overflow. */
        free(ss);
        return;
    }
    next = fsmNextDeadline(f);
    if (next != UINT64_MAX && next > now && next - now < 86400000) {
        applyTick(f, next);
    }
    applyTick(f, fsmNow(f) + 3600000);
    fsmSessionForEach(f, sessionCb, ss);
    if (ss->n > 0 && ss->n < MAX_EXPIRE) {
        expireAll(f, ss);
        fsmLockForEach(f, "", 0, heldCb, NULL);
        ss->n = 0;
        fsmSessionForEach(f, sessionCb, ss);
        FUZZ_CHECK(ss->n == 0, "%zu sessions left after expiring all",
                   ss->n);
    }
    fuzzSnapshotRoundTrip(f, NULL, NULL);
    free(ss);
}

/* The Restore command on a fresh table must agree with fsmRestore. */
static void restoreCommand(const uint8_t *snap, size_t len, bool accepted)
{
    struct fsm_config fc;
    struct fsm f;
    Tn__Command c = TN__COMMAND__INIT;
    Tn__SnapshotRestore sr = TN__SNAPSHOT_RESTORE__INIT;
    Tn__Command *cp = &c;
    struct fsm_result res;
    Tn__Batch b;

    fsmConfigDefaults(&fc);
    FUZZ_CHECK(fsmInit(&f, &fc) == 0, "fsmInit failed");
    sr.snapshot.data = (uint8_t *)snap;
    sr.snapshot.len = len;
    c.body_case = TN__COMMAND__BODY_RESTORE;
    c.restore = &sr;
    fuzzBatchInit(&b, &cp, 1, FUZZ_T0);
    memset(&res, 0, sizeof res);
    fuzzFsmApply(&f, 1, &b, &res);
    FUZZ_CHECK((res.status == TN__STATUS__OK) == accepted,
               "Restore command: %d, fsmRestore %s", res.status,
               accepted ? "accepted" : "refused");
    if (accepted && fsmIndex(&f) < 1000 && fsmNow(&f) < (UINT64_C(1) << 61)) {
        fuzzSnapshotRoundTrip(&f, NULL, NULL);
    }
    fsmClose(&f);
}

static bool tryRestore(const uint8_t *buf, size_t len)
{
    struct fsm_config fc;
    struct fsm f;
    void *before = NULL;
    void *after = NULL;
    size_t lb = 0;
    size_t la = 0;
    int rv;

    fsmConfigDefaults(&fc);
    FUZZ_CHECK(fsmInit(&f, &fc) == 0, "fsmInit failed");
    FUZZ_CHECK(fsmSnapshot(&f, &before, &lb) == 0, "snapshot failed");
    rv = fsmRestore(&f, buf, len);
    if (rv != 0) {
        FUZZ_CHECK(rv == TN__STATUS__INVALID_ARGUMENT ||
                       rv == TN__STATUS__INTERNAL,
                   "fsmRestore: %d", rv);
        /* Refused: the table is untouched. */
        FUZZ_CHECK(fsmSnapshot(&f, &after, &la) == 0, "snapshot failed");
        FUZZ_CHECK(la == lb && memcmp(before, after, la) == 0,
                   "a refused restore changed the table");
    } else {
        exercise(&f);
    }
    free(before);
    free(after);
    fsmClose(&f);
    return rv == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *full = malloc(size + 8);
    uint64_t sum = fuzzFnv1a(data, size);
    bool ok;

    FUZZ_CHECK(full != NULL, "out of memory");
    tryRestore(data, size);
    if (size > 0) {
        memcpy(full, data, size);
    }
    for (int i = 0; i < 8; i++) {
        full[size + (size_t)i] = (uint8_t)(sum >> (8 * i));
    }
    ok = tryRestore(full, size + 8);
    restoreCommand(full, size + 8, ok);
    free(full);
    return 0;
}
