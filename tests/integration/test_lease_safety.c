/* DESIGN §4 lease-safety rules that live in the leader's memory (dispatch +
 * lease keeper), on 3 real tenured processes:
 *
 *   - a leader change never shortens a lease (rule 4): a session renewed by
 *     a keepalive answered from the old leader's memory (no log entry) keeps
 *     its lock after kill -9 of that leader, until at least TTL after the
 *     renewal, and indeed until TTL + election timeout after the kill (the
 *     new leader cannot start its deadlines before the kill); the lock is
 *     freed eventually, TTL + election timeout after the new leader became
 *     ready (its "leader ready" log line), not before, not much later;
 *   - a leadership transfer (LeaderTransfer through libtenure) is treated
 *     like an election: the same bounds, counted from the transfer;
 *   - a partitioned leader stops answering keepalives (rule 3): with both
 *     followers stopped (SIGSTOP) the old leader steps down within a few
 *     election timeouts and from then on answers keepalives and acquires
 *     with no-leader / no-quorum (NOT_LEADER / NO_QUORUM), never OK; after
 *     SIGCONT the session and its lock are still there.
 *
 * Keepalives are sent with `PUT /v1/sessions/{sid}` straight to the node
 * under test: the shim submits the raw Keepalive request to that node's
 * dispatch, which answers it from the lease keeper's memory. Times are
 * measured on CLOCK_MONOTONIC of this process, the same clock the daemons
 * use for their deadlines (same machine). Every lower bound below is a
 * safety property that must hold however loaded the machine is; the upper
 * bounds are generous. */
#include "lib/test.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/cluster.h"
#include "lib/http.h"
#include "tenure.h"

#define PROBLEM "https://tenure.dev/problems/"
#define TTL_MS 4000u
#define ELECTION_MS 300u  /* the daemon's default --election-timeout */
#define REQ_TIMEOUT_MS 3000
#define POLL_MS 100

struct fixture
{
    struct tn_cluster cluster;
    tn_client *client;
    pid_t stopped[2]; /* SIGSTOPped pids to SIGCONT in teardown */
};

static uint64_t monoMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t wallMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleepMs(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int setUp(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -1;
    }
    *state = f;
    return 0;
}

static int tearDown(void **state)
{
    struct fixture *f = *state;
    for (int k = 0; k < 2; k++) {
        if (f->stopped[k] > 0) {
            kill(f->stopped[k], SIGCONT);
        }
    }
    if (f->client != NULL) {
        tn_client_close(f->client);
    }
    clusterDestroy(&f->cluster);
    free(f);
    return 0;
}

static int startCluster(struct fixture *f)
{
    int leader;
    if (clusterStart(&f->cluster, 3) != 0) {
        fail_msg("clusterStart: %s", f->cluster.errmsg);
    }
    leader = clusterWaitLeader(&f->cluster, 15000);
    if (leader < 0) {
        fail_msg("no leader: %s", f->cluster.errmsg);
    }
    if (clusterWaitReady(&f->cluster, 15000) != 0) {
        fail_msg("not ready: %s", f->cluster.errmsg);
    }
    return leader;
}

/* One request; the parsed JSON body (or NULL) in *@json. Returns the HTTP
 * status, or -1 when no answer came (the reason is in @r->error). */
static int req(int port,
               const char *method,
               const char *path,
               const char *headers,
               const char *body,
               struct http_response *r,
               json_t **json)
{
    int status = httpRequestTimeout(port, method, path, headers, body,
                                    REQ_TIMEOUT_MS, r);
    *json = NULL;
    if (status > 0 && r->body != NULL && r->body_len > 0) {
        *json = json_loads(r->body, 0, NULL);
    }
    return status;
}

static uint64_t jU64(const json_t *j, const char *key)
{
    const json_t *v = json_object_get(j, key);
    if (json_is_integer(v)) {
        return (uint64_t)json_integer_value(v);
    }
    if (json_is_string(v)) {
        return strtoull(json_string_value(v), NULL, 10);
    }
    return 0;
}

static const char *jStr(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s != NULL ? s : "";
}

/* The problem type name ("no-quorum") of an error body, or "". */
static const char *problemName(const json_t *j)
{
    const char *t = jStr(j, "type");
    return strncmp(t, PROBLEM, strlen(PROBLEM)) == 0 ? t + strlen(PROBLEM)
                                                     : t;
}

/* POST /v1/sessions on @node; returns the session id. */
static uint64_t openSession(struct fixture *f, int node, const char *holder)
{
    struct http_response r;
    json_t *j;
    char body[128];
    uint64_t sid;
    int status;

    snprintf(body, sizeof body, "{\"holder\":\"%s\",\"ttl_ms\":%u}", holder,
             TTL_MS);
    status = req(clusterHttpPort(&f->cluster, node), "POST", "/v1/sessions",
                 NULL, body, &r, &j);
    if (status != 201 || j == NULL) {
        fail_msg("POST /v1/sessions on node %d: %d %s %s", node, status,
                 r.error, r.body ? r.body : "");
    }
    sid = jU64(j, "session");
    assert_true(sid > 0);
    assert_int_equal(jU64(j, "ttl_ms"), TTL_MS);
    json_decref(j);
    httpResponseFree(&r);
    return sid;
}

/* PUT /v1/locks/{res} in session @sid on @node; returns the token. */
static uint64_t acquireIn(struct fixture *f,
                          int node,
                          const char *res,
                          uint64_t sid)
{
    struct http_response r;
    json_t *j;
    char path[128];
    char body[96];
    uint64_t token;
    int status;

    snprintf(path, sizeof path, "/v1/locks/%s", res);
    snprintf(body, sizeof body, "{\"session\":%" PRIu64 "}", sid);
    status = req(clusterHttpPort(&f->cluster, node), "PUT", path, NULL, body,
                 &r, &j);
    if (status != 201 || j == NULL) {
        fail_msg("PUT %s on node %d: %d %s %s", path, node, status, r.error,
                 r.body ? r.body : "");
    }
    token = jU64(j, "token");
    assert_true(token > 0);
    json_decref(j);
    httpResponseFree(&r);
    return token;
}

/* PUT /v1/sessions/{sid} (a keepalive) on @node. Returns the HTTP status
 * (-1: no answer) and copies the problem name into @problem. */
static int keepalive(struct fixture *f,
                     int node,
                     uint64_t sid,
                     char *problem,
                     size_t problem_len)
{
    struct http_response r;
    json_t *j;
    char path[64];
    int status;

    snprintf(path, sizeof path, "/v1/sessions/%" PRIu64, sid);
    status = req(clusterHttpPort(&f->cluster, node), "PUT", path, NULL, NULL,
                 &r, &j);
    snprintf(problem, problem_len, "%s",
             status >= 400 && j != NULL ? problemName(j) : "");
    if (status == 200 && j != NULL) {
        assert_int_equal(jU64(j, "session"), sid);
    }
    json_decref(j);
    httpResponseFree(&r);
    return status;
}

/* The state of @res as node @node answers a linearizable GET: "held",
 * "free", "lock-delay", or "" when it gave no state (e.g. 503 while there
 * is no leader). The first holder's token goes to *@token. */
static int lockState(struct fixture *f,
                     int node,
                     const char *res,
                     char *state,
                     size_t state_len,
                     uint64_t *token)
{
    struct http_response r;
    json_t *j;
    char path[128];
    int status;

    snprintf(path, sizeof path, "/v1/locks/%s", res);
    status = req(clusterHttpPort(&f->cluster, node), "GET", path, NULL, NULL,
                 &r, &j);
    state[0] = '\0';
    *token = 0;
    if (status == 200 && j != NULL) {
        json_t *holders = json_object_get(j, "holders");
        snprintf(state, state_len, "%s", jStr(j, "state"));
        if (json_array_size(holders) > 0) {
            *token = jU64(json_array_get(holders, 0), "token");
        }
    }
    json_decref(j);
    httpResponseFree(&r);
    return status;
}

/* What the lease watch saw. */
struct watchResult
{
    uint64_t last_held_sent;  /* send time of the last "held" answer */
    uint64_t held_answers;
    uint64_t freed_answered;  /* answer time of the first "free" answer */
    uint64_t freed_sent;      /* its send time */
    uint64_t freed_wall;      /* its answer time, CLOCK_REALTIME */
};

/* Poll the state of @res on the running nodes other than @skip (round
 * robin) until it is no longer held or until @give_up. Fails the test if
 * it is ever seen held under another token, or seen not held in an answer
 * that arrived before @lower (the lease must not end before then). */
static void watchLease(struct fixture *f,
                       int skip,
                       const char *res,
                       uint64_t token,
                       uint64_t lower,
                       uint64_t give_up,
                       struct watchResult *w)
{
    int node = skip;
    memset(w, 0, sizeof *w);
    while (monoMs() < give_up) {
        char state[32];
        uint64_t held;
        uint64_t sent;
        uint64_t answered;
        int status;

        do {
            node = (node + 1) % 3;
        } while (node == skip || !clusterRunning(&f->cluster, node));
        sent = monoMs();
        status = lockState(f, node, res, state, sizeof state, &held);
        answered = monoMs();
        if (status == 200 && strcmp(state, "held") == 0) {
            if (held != token) {
                fail_msg("%s held under token %" PRIu64 ", want %" PRIu64,
                         res, held, token);
            }
            w->held_answers++;
            w->last_held_sent = sent;
        } else if (status == 200) {
            if (answered < lower) {
                fail_msg("%s was %s in an answer at %" PRId64
                         " ms relative to the lower bound of its lease "
                         "(node %d)",
                         res, state, (int64_t)(answered - lower),
                         clusterNodeId(node));
            }
            w->freed_answered = answered;
            w->freed_sent = sent;
            w->freed_wall = wallMs();
            return;
        }
        sleepMs(POLL_MS);
    }
}

/* Wall-clock time (ms) of the last "leader ready" line in node @node's log
 * (the daemon logs it right after giving every session its new deadline),
 * or 0. Log lines start with ts=YYYY-MM-DDTHH:MM:SS.mmmZ (UTC). */
static uint64_t leaderReadyWallMs(struct fixture *f, int node)
{
    FILE *fp = fopen(f->cluster.nodes[node].log_path, "r");
    char line[4096];
    uint64_t last = 0;
    if (fp == NULL) {
        return 0;
    }
    while (fgets(line, sizeof line, fp) != NULL) {
        struct tm tm;
        int ms = 0;
        if (strstr(line, "msg=\"leader ready\"") == NULL) {
            continue;
        }
        memset(&tm, 0, sizeof tm);
        if (sscanf(line, "ts=%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon,
                   &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec,
                   &ms) == 7) {
            tm.tm_year -= 1900;
            tm.tm_mon -= 1;
            last = (uint64_t)timegm(&tm) * 1000 + (uint64_t)ms;
        }
    }
    fclose(fp);
    return last;
}

/* The lease ended after (and not much later than) TTL + election timeout
 * from when the new leader @leader became ready. */
static void expectFreedAfterReady(struct fixture *f,
                                  int leader,
                                  const struct watchResult *w)
{
    uint64_t ready = leaderReadyWallMs(f, leader);
    if (ready == 0) {
        fail_msg("no \"leader ready\" line in node %d's log",
                 clusterNodeId(leader));
    }
    /* The log line is written just after the deadlines were set: allow
     * for the few ms between the two. */
    if (w->freed_wall + 20 < ready + TTL_MS + ELECTION_MS) {
        fail_msg("freed %" PRId64 " ms after the new leader was ready, "
                 "before ttl + election timeout (%u ms)",
                 (int64_t)(w->freed_wall - ready), TTL_MS + ELECTION_MS);
    }
    if (w->freed_wall > ready + TTL_MS + ELECTION_MS + 5000) {
        fail_msg("freed only %" PRIu64 " ms after the new leader was ready",
                 w->freed_wall - ready);
    }
    fprintf(stderr, "  new leader (node %d) ready -> freed: %" PRId64 " ms\n",
            clusterNodeId(leader), (int64_t)(w->freed_wall - ready));
}

/* After the expiry: the session and the lease behind the token are gone. */
static void expectEnded(struct fixture *f,
                        int node,
                        const char *res,
                        uint64_t sid,
                        uint64_t token)
{
    struct http_response r;
    json_t *j;
    char problem[64];
    char path[128];
    char hdr[64];
    int status;

    status = keepalive(f, node, sid, problem, sizeof problem);
    assert_int_equal(status, 410);
    assert_string_equal(problem, "session-expired");
    snprintf(path, sizeof path, "/v1/locks/%s", res);
    snprintf(hdr, sizeof hdr, "If-Match: \"%" PRIu64 "\"", token);
    status = req(clusterHttpPort(&f->cluster, node), "DELETE", path, hdr,
                 NULL, &r, &j);
    if (status != 410 || j == NULL ||
        strcmp(problemName(j), "lease-expired") != 0) {
        fail_msg("DELETE %s after the expiry: %d %s", path, status,
                 r.body ? r.body : r.error);
    }
    json_decref(j);
    httpResponseFree(&r);
}

/* Rule 4: kill -9 of the leader right after it renewed a session from
 * memory (no log entry the new leader could know about). */
static void test_leader_kill_never_shortens_lease(void **state)
{
    struct fixture *f = *state;
    const char *res = "safety/kill";
    struct watchResult w;
    char problem[64];
    uint64_t sid;
    uint64_t token;
    uint64_t t_renew;
    uint64_t t_kill;
    uint64_t lower;
    int leader;

    leader = startCluster(f);
    sid = openSession(f, leader, "kill-holder");
    token = acquireIn(f, leader, res, sid);

    /* The last renewal: answered from the leader's memory. */
    sleepMs(500);
    t_renew = monoMs();
    assert_int_equal(keepalive(f, leader, sid, problem, sizeof problem), 200);
    sleepMs(1500);

    t_kill = monoMs();
    assert_int_equal(clusterKill(&f->cluster, leader), 0);
    /* The new leader becomes ready after the kill, and gives the session
     * ttl + election timeout from then. */
    lower = t_kill + TTL_MS + ELECTION_MS;
    watchLease(f, leader, res, token, lower, t_kill + TTL_MS + 15000, &w);

    if (w.freed_answered == 0) {
        fail_msg("%s still held %" PRIu64 " ms after the kill (ttl %u ms)",
                 res, monoMs() - t_kill, TTL_MS);
    }
    /* Held at a point past the TTL after the last renewal (the holder's own
     * deadline is earlier still). */
    if (w.last_held_sent < t_renew + TTL_MS) {
        fail_msg("never observed held at or after renewal + ttl (last held "
                 "read sent %" PRId64 " ms after the renewal, %" PRIu64
                 " held answers)",
                 (int64_t)(w.last_held_sent - t_renew), w.held_answers);
    }
    fprintf(stderr,
            "lease after kill -9: freed %" PRIu64 " ms after the renewal, %"
            PRIu64 " ms after the kill (lower bound %u)\n",
            w.freed_answered - t_renew, w.freed_answered - t_kill,
            TTL_MS + ELECTION_MS);
    leader = clusterWaitLeader(&f->cluster, 10000);
    assert_true(leader >= 0);
    expectFreedAfterReady(f, leader, &w);
    /* Ask the surviving follower (not the killed old leader). */
    for (int i = 0; i < 3; i++) {
        if (i != leader && clusterRunning(&f->cluster, i)) {
            expectEnded(f, i, res, sid, token);
            break;
        }
    }
    clusterPassed(&f->cluster);
}

static int leaderOf(struct fixture *f, int node)
{
    struct http_response r;
    json_t *j;
    int status = req(clusterHttpPort(&f->cluster, node), "GET",
                     "/v1/cluster", NULL, NULL, &r, &j);
    int leader = -1;
    if (status == 200 && j != NULL) {
        leader = (int)jU64(j, "leader_id") - 1;
    }
    json_decref(j);
    httpResponseFree(&r);
    return leader;
}

/* Rule 4 for a transfer: LeaderTransfer through libtenure, right after a
 * keepalive answered from the old leader's memory. */
static void test_leader_transfer_extends_lease(void **state)
{
    struct fixture *f = *state;
    const char *res = "safety/transfer";
    struct tn_client_opts o;
    struct watchResult w;
    char problem[64];
    uint64_t sid;
    uint64_t token;
    uint64_t t_renew;
    uint64_t t_transfer;
    uint64_t end;
    int leader;
    int target;
    int rc;

    leader = startCluster(f);
    target = (leader + 1) % 3;
    memset(&o, 0, sizeof o);
    o.timeout_ms = 10000;
    assert_int_equal(
        tn_client_open(clusterRpcEndpoints(&f->cluster), &o, &f->client),
        TN_OK);
    sid = openSession(f, leader, "transfer-holder");
    token = acquireIn(f, leader, res, sid);

    sleepMs(500);
    t_renew = monoMs();
    assert_int_equal(keepalive(f, leader, sid, problem, sizeof problem), 200);
    sleepMs(1500);

    t_transfer = monoMs();
    rc = tn_leader_transfer(f->client, (uint64_t)clusterNodeId(target));
    if (rc != TN_OK) {
        fail_msg("tn_leader_transfer: %s: %s", tn_strerror(rc),
                 tn_client_errmsg(f->client));
    }
    end = monoMs() + 5000;
    while (leaderOf(f, target) != target && monoMs() < end) {
        sleepMs(20);
    }
    assert_int_equal(leaderOf(f, target), target);

    /* Poll through every node (the old leader, now a follower, relays). */
    watchLease(f, -1, res, token, t_transfer + TTL_MS + ELECTION_MS,
               t_transfer + TTL_MS + 15000, &w);
    if (w.freed_answered == 0) {
        fail_msg("%s still held %" PRIu64 " ms after the transfer", res,
                 monoMs() - t_transfer);
    }
    if (w.last_held_sent < t_renew + TTL_MS) {
        fail_msg("never observed held at or after renewal + ttl (last held "
                 "read sent %" PRId64 " ms after the renewal)",
                 (int64_t)(w.last_held_sent - t_renew));
    }
    fprintf(stderr,
            "lease after transfer: freed %" PRIu64 " ms after the renewal, %"
            PRIu64 " ms after the transfer (lower bound %u)\n",
            w.freed_answered - t_renew, w.freed_answered - t_transfer,
            TTL_MS + ELECTION_MS);
    expectFreedAfterReady(f, target, &w);
    expectEnded(f, leader, res, sid, token);
    clusterPassed(&f->cluster);
}

/* Rule 3: both followers stopped; the leader must stop answering
 * keepalives (and acquires) once it has not heard from a majority. */
static void test_partitioned_leader_stops_keepalives(void **state)
{
    struct fixture *f = *state;
    const char *res = "safety/partition";
    char problem[64];
    char st[32];
    uint64_t sid;
    uint64_t token;
    uint64_t held;
    uint64_t t_stop;
    uint64_t first_refusal = 0;
    uint64_t last_ok_sent = 0;
    uint64_t end;
    unsigned oks = 0;
    unsigned refusals = 0;
    int leader;
    int followers[2];
    int status;

    leader = startCluster(f);
    followers[0] = (leader + 1) % 3;
    followers[1] = (leader + 2) % 3;
    sid = openSession(f, leader, "partition-holder");
    token = acquireIn(f, leader, res, sid);
    assert_int_equal(keepalive(f, leader, sid, problem, sizeof problem), 200);

    t_stop = monoMs();
    for (int k = 0; k < 2; k++) {
        f->stopped[k] = f->cluster.nodes[followers[k]].pid;
        assert_int_equal(kill(f->stopped[k], SIGSTOP), 0);
    }

    /* Keepalives to the old leader: OK for a short while, then refused
     * for good. Keep asking for 1.5 s after the first refusal. */
    end = t_stop + 10000;
    while (monoMs() < end) {
        uint64_t sent = monoMs();
        status = keepalive(f, leader, sid, problem, sizeof problem);
        if (status == 200) {
            if (first_refusal != 0) {
                fail_msg("keepalive answered OK %" PRIu64
                         " ms after the old leader first refused one",
                         sent - first_refusal);
            }
            oks++;
            last_ok_sent = sent;
        } else if (status == 503) {
            if (strcmp(problem, "no-quorum") != 0 &&
                strcmp(problem, "no-leader") != 0) {
                fail_msg("keepalive refused with 503 %s", problem);
            }
            if (first_refusal == 0) {
                first_refusal = sent;
                end = sent + 1500;
            }
            refusals++;
        } else {
            fail_msg("keepalive on the partitioned leader: %d %s", status,
                     problem);
        }
        sleepMs(50);
    }
    if (first_refusal == 0) {
        fail_msg("the partitioned leader still answered keepalives 10 s "
                 "after losing both followers (%u OK)",
                 oks);
    }
    fprintf(stderr,
            "partitioned leader: last keepalive OK sent %" PRId64
            " ms after SIGSTOP, first refusal %" PRIu64 " ms after (%u OK, %u "
            "refused)\n",
            last_ok_sent ? (int64_t)(last_ok_sent - t_stop) : -1,
            first_refusal - t_stop, oks, refusals);
    /* "Within a few election timeouts" (generous for a loaded machine):
     * libraft steps down about one election timeout after it last heard
     * from a majority; a keepalive sent later than a few of them must not
     * have been answered OK. */
    if (last_ok_sent > t_stop + 5 * ELECTION_MS) {
        fail_msg("a keepalive sent %" PRIu64 " ms after the old leader lost "
                 "both followers was answered OK",
                 last_ok_sent - t_stop);
    }
    if (first_refusal - t_stop > 10 * ELECTION_MS) {
        fail_msg("the old leader kept answering keepalives for %" PRIu64
                 " ms without a majority",
                 first_refusal - t_stop);
    }

    /* Acquires and linearizable reads are refused too, never granted. */
    {
        struct http_response r;
        json_t *j;
        char body[96];
        snprintf(body, sizeof body, "{\"session\":%" PRIu64 "}", sid);
        status = req(clusterHttpPort(&f->cluster, leader), "PUT",
                     "/v1/locks/safety/partition-other", NULL, body, &r, &j);
        if (status != 503 || j == NULL ||
            (strcmp(problemName(j), "no-quorum") != 0 &&
             strcmp(problemName(j), "no-leader") != 0)) {
            fail_msg("acquire on the partitioned leader: %d %s", status,
                     r.body ? r.body : r.error);
        }
        json_decref(j);
        httpResponseFree(&r);
        status = req(clusterHttpPort(&f->cluster, leader), "GET",
                     "/v1/locks/safety/partition", NULL, NULL, &r, &j);
        assert_int_equal(status, 503);
        json_decref(j);
        httpResponseFree(&r);
        status = req(clusterHttpPort(&f->cluster, leader), "GET", "/healthz",
                     NULL, NULL, &r, &j);
        assert_int_equal(status, 200);
        assert_non_null(j);
        assert_false(json_is_true(json_object_get(j, "is_leader")));
        json_decref(j);
        httpResponseFree(&r);
    }

    /* Heal. A leader is elected again; the session and its lock survived
     * (its last OK keepalive was at most a few hundred ms before). */
    for (int k = 0; k < 2; k++) {
        kill(f->stopped[k], SIGCONT);
        f->stopped[k] = 0;
    }
    leader = clusterWaitLeader(&f->cluster, 15000);
    if (leader < 0) {
        fail_msg("no leader after SIGCONT: %s", f->cluster.errmsg);
    }
    end = monoMs() + 5000;
    do {
        status = keepalive(f, leader, sid, problem, sizeof problem);
        if (status != 503) {
            break;
        }
        sleepMs(50);
    } while (monoMs() < end);
    if (status != 200) {
        fail_msg("keepalive after the heal: %d %s", status, problem);
    }
    status = lockState(f, leader, res, st, sizeof st, &held);
    assert_int_equal(status, 200);
    assert_string_equal(st, "held");
    assert_int_equal(held, token);
    clusterPassed(&f->cluster);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_leader_kill_never_shortens_lease,
                                        setUp, tearDown),
        cmocka_unit_test_setup_teardown(test_leader_transfer_extends_lease,
                                        setUp, tearDown),
        cmocka_unit_test_setup_teardown(
            test_partitioned_leader_stops_keepalives, setUp, tearDown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
