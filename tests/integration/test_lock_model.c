/* The lock model of DESIGN §3 end to end over the HTTP shim, on one cluster
 * of 3 real tenured processes shared by the group (each test uses its own
 * resources; requests go to a follower, which relays, and to the leader):
 *
 *   expiry          a lock without keepalives is freed after its TTL (never
 *                   before), and its token then gets 410 lease-expired;
 *   lock-delay      after an expiry nobody gets the lock until
 *                   lock_delay_until (409 lock-delay, never "free"), a
 *                   waiter whose wait outlasts the delay gets it right after,
 *                   a clean release starts no delay;
 *   shared          many readers at once; a waiting writer stops new
 *                   readers (writer preference) and gets the lock when the
 *                   readers leave, then the reader queued behind it;
 *   semaphore       N permits, each with its own token; the N+1th waits or
 *                   is refused; a permit count that differs is refused;
 *   queue hand-off  waiters get the lock in FIFO order, in the same commit
 *                   as the release (a read right after the release never
 *                   sees it free); a waiter whose session dies is skipped
 *                   (410); a waiter whose wait runs out gets 409;
 *   idempotency     the same Idempotency-Key gets the original answer (same
 *                   token, Idempotent-Replayed: true), through any node,
 *                   also after the lock changed hands, which it never
 *                   touches;
 *   watch           a long-poll returns soon after a change, and after its
 *                   wait when nothing changes;
 *   valid_for_ms    a lock acquired in an existing session stays held for
 *                   the valid_for_ms its 201 promised (from the send);
 *   long waits      a wait_ms longer than the ttl_ms of the shim's
 *                   per-lock session is still a wait of wait_ms;
 *   abandoned wait  a waiter whose client disconnected is withdrawn: the
 *                   next live waiter gets the lock;
 *   incidents       a late renew/release is counted and logged with the
 *                   holder.
 *
 * Every wait is bounded; blocking requests run on threads that record what
 * they saw (they never assert). */
#include "lib/test.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/cluster.h"
#include "lib/http.h"

#define PROBLEM "https://tenure.dev/problems/"
#define REQ_TIMEOUT_MS 10000
#define WAIT_TIMEOUT_MS 25000 /* for requests that wait in the queue */

struct suite
{
    struct tn_cluster cluster;
    int leader;
    int completed; /* tests that ran to their end */
};

static struct suite *S;

/* ------------------------------------------------------------- helpers */

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

static int leader(void)
{
    return S->leader;
}

static int follower(void)
{
    return (S->leader + 1) % 3;
}

static int port(int node)
{
    return clusterHttpPort(&S->cluster, node);
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

static const char *problemName(const json_t *j)
{
    const char *t = jStr(j, "type");
    return strncmp(t, PROBLEM, strlen(PROBLEM)) == 0 ? t + strlen(PROBLEM)
                                                     : t;
}

/* One request to @node that must answer @want; returns the JSON body (NULL
 * when empty). The caller frees the JSON and @r. */
static json_t *call(int node,
                    const char *method,
                    const char *path,
                    const char *headers,
                    const char *body,
                    int want,
                    struct http_response *r)
{
    int status = httpRequestTimeout(port(node), method, path, headers, body,
                                    REQ_TIMEOUT_MS, r);
    json_t *j = NULL;
    if (status != want) {
        fail_msg("%s %s on node %d: %d, want %d: %s", method, path,
                 clusterNodeId(node), status, want,
                 r->body != NULL ? r->body : r->error);
    }
    if (r->body != NULL && r->body_len > 0) {
        j = json_loads(r->body, 0, NULL);
        if (j == NULL) {
            fail_msg("%s %s: body is not JSON: %s", method, path, r->body);
        }
    }
    return j;
}

/* Same, for an error that must be problem @problem. */
static json_t *callProblem(int node,
                           const char *method,
                           const char *path,
                           const char *headers,
                           const char *body,
                           int want,
                           const char *problem,
                           struct http_response *r)
{
    json_t *j = call(node, method, path, headers, body, want, r);
    if (j == NULL || strcmp(problemName(j), problem) != 0) {
        fail_msg("%s %s: want problem %s, got %s", method, path, problem,
                 r->body != NULL ? r->body : "(no body)");
    }
    return j;
}

static uint64_t etag(const struct http_response *r)
{
    uint64_t t = 0;
    if (httpETagToken(r, &t) != 0) {
        fail_msg("no ETag token");
    }
    return t;
}

static void lockPath(char *buf, size_t len, const char *res)
{
    snprintf(buf, len, "/v1/locks/%s", res);
}

static void ifMatch(char *buf, size_t len, uint64_t token)
{
    snprintf(buf, len, "If-Match: \"%" PRIu64 "\"", token);
}

/* PUT /v1/locks/{res} with @body on @node, which must grant it (201);
 * returns the token, also checked against the ETag. */
static uint64_t acquire(int node, const char *res, const char *body)
{
    struct http_response r;
    char path[160];
    json_t *j;
    uint64_t t;

    lockPath(path, sizeof path, res);
    j = call(node, "PUT", path, NULL, body, 201, &r);
    t = jU64(j, "token");
    assert_true(t > 0);
    assert_int_equal(etag(&r), t);
    json_decref(j);
    httpResponseFree(&r);
    return t;
}

static void release(int node, const char *res, uint64_t token)
{
    struct http_response r;
    char path[160];
    char h[64];
    json_t *j;

    lockPath(path, sizeof path, res);
    ifMatch(h, sizeof h, token);
    j = call(node, "DELETE", path, h, NULL, 204, &r);
    json_decref(j);
    httpResponseFree(&r);
}

/* GET /v1/locks/{res}[?query] on @node (200). */
static json_t *lockGet(int node, const char *res, const char *query)
{
    struct http_response r;
    char path[256];
    json_t *j;

    snprintf(path, sizeof path, "/v1/locks/%s%s%s", res, query ? "?" : "",
             query ? query : "");
    j = call(node, "GET", path, NULL, NULL, 200, &r);
    assert_non_null(j);
    httpResponseFree(&r);
    return j;
}

/* The i-th holder of a state document. */
static const json_t *holderAt(const json_t *st, size_t i)
{
    return json_array_get(json_object_get(st, "holders"), i);
}

/* Poll the state of @res on @node until @pred holds (bounded); returns the
 * last state document (the caller frees it) or fails. */
static json_t *waitFor(int node,
                       const char *res,
                       bool (*pred)(const json_t *st, const void *arg),
                       const void *arg,
                       unsigned timeout_ms,
                       const char *what)
{
    uint64_t end = monoMs() + timeout_ms;
    for (;;) {
        json_t *st = lockGet(node, res, NULL);
        if (pred(st, arg)) {
            return st;
        }
        if (monoMs() >= end) {
            char *dump = json_dumps(st, JSON_COMPACT);
            fail_msg("%s: %s not reached within %u ms: %s", res, what,
                     timeout_ms, dump ? dump : "?");
        }
        json_decref(st);
        sleepMs(50);
    }
}

static bool queueIs(const json_t *st, const void *arg)
{
    return jU64(st, "queue_len") == *(const uint64_t *)arg;
}

static bool stateIs(const json_t *st, const void *arg)
{
    return strcmp(jStr(st, "state"), (const char *)arg) == 0;
}

/* Wait until @res has @n queued acquires. */
static void waitQueue(const char *res, uint64_t n)
{
    json_decref(waitFor(leader(), res, queueIs, &n, 10000, "queue length"));
}

/* The value of the counter @name in node @node's /metrics. */
static uint64_t metric(int node, const char *name)
{
    struct http_response r;
    const char *p;
    size_t n = strlen(name);
    uint64_t v = 0;
    bool found = false;
    int status = httpRequestTimeout(port(node), "GET", "/metrics", NULL, NULL,
                                    REQ_TIMEOUT_MS, &r);
    if (status != 200 || r.body == NULL) {
        fail_msg("GET /metrics: %d %s", status, r.error);
    }
    for (p = r.body; p != NULL && *p != '\0';) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ') {
            v = strtoull(p + n + 1, NULL, 10);
            found = true;
            break;
        }
        p = strchr(p, '\n');
        if (p != NULL) {
            p++;
        }
    }
    httpResponseFree(&r);
    if (!found) {
        fail_msg("/metrics has no %s", name);
    }
    return v;
}

/* Does node @node's log contain a line with all of @a, @b and @c? */
static bool logHas(int node, const char *a, const char *b, const char *c)
{
    FILE *fp = fopen(S->cluster.nodes[node].log_path, "r");
    char line[4096];
    bool found = false;
    if (fp == NULL) {
        return false;
    }
    while (!found && fgets(line, sizeof line, fp) != NULL) {
        found = strstr(line, a) != NULL && strstr(line, b) != NULL &&
                strstr(line, c) != NULL;
    }
    fclose(fp);
    return found;
}

/* ------------------------------------------------- background requests */

struct bg
{
    pthread_t thread;
    int port;
    char method[8];
    char path[256];
    char headers[256];
    char body[256];
    int timeout_ms;
    /* results */
    int status;
    uint64_t token;
    char problem[64];
    char text[512];
    uint64_t sent_ms;
    uint64_t done_ms;
    uint64_t done_wall_ms;
};

static void *bgMain(void *arg)
{
    struct bg *b = arg;
    struct http_response r;
    json_t *j = NULL;

    b->sent_ms = monoMs();
    b->status = httpRequestTimeout(b->port, b->method, b->path,
                                   b->headers[0] ? b->headers : NULL,
                                   b->body[0] ? b->body : NULL, b->timeout_ms,
                                   &r);
    b->done_ms = monoMs();
    b->done_wall_ms = wallMs();
    if (r.body != NULL && r.body_len > 0) {
        j = json_loads(r.body, 0, NULL);
    }
    if (j != NULL) {
        b->token = jU64(j, "token");
        snprintf(b->problem, sizeof b->problem, "%s", problemName(j));
    }
    snprintf(b->text, sizeof b->text, "%s",
             r.body != NULL ? r.body : r.error);
    json_decref(j);
    httpResponseFree(&r);
    return NULL;
}

/* Start @method @path with @body on @node in the background. */
static void bgStart(struct bg *b,
                    int node,
                    const char *method,
                    const char *path,
                    const char *body,
                    int timeout_ms)
{
    memset(b, 0, sizeof *b);
    b->port = port(node);
    snprintf(b->method, sizeof b->method, "%s", method);
    snprintf(b->path, sizeof b->path, "%s", path);
    snprintf(b->body, sizeof b->body, "%s", body ? body : "");
    b->timeout_ms = timeout_ms;
    assert_int_equal(pthread_create(&b->thread, NULL, bgMain, b), 0);
}

/* Start a waiting acquire of @res with @body. */
static void bgAcquire(struct bg *b, int node, const char *res, const char *body)
{
    char path[160];
    lockPath(path, sizeof path, res);
    bgStart(b, node, "PUT", path, body, WAIT_TIMEOUT_MS);
}

static void bgJoin(struct bg *b)
{
    pthread_join(b->thread, NULL);
}

/* ----------------------------------------------------------- lifecycle */

static int groupSetUp(void **state)
{
    (void)state;
    S = calloc(1, sizeof *S);
    if (S == NULL) {
        return -1;
    }
    if (clusterStart(&S->cluster, 3) != 0) {
        fprintf(stderr, "clusterStart: %s\n", S->cluster.errmsg);
        return -1;
    }
    S->leader = clusterWaitLeader(&S->cluster, 15000);
    if (S->leader < 0 || clusterWaitReady(&S->cluster, 15000) != 0) {
        fprintf(stderr, "cluster not ready: %s\n", S->cluster.errmsg);
        return -1;
    }
    return 0;
}

static int groupTearDown(void **state)
{
    (void)state;
    if (S != NULL) {
        clusterDestroy(&S->cluster);
        free(S);
        S = NULL;
    }
    return 0;
}

/* Every test ends with this: the leader did not change under us (the
 * group's timing checks assume one leader). */
static void sameLeader(void)
{
    int l = clusterWaitLeader(&S->cluster, 5000);
    if (l != S->leader) {
        clusterFailed(&S->cluster);
        fail_msg("the leader changed during the test (%d -> %d): %s",
                 clusterNodeId(S->leader), l >= 0 ? clusterNodeId(l) : -1,
                 S->cluster.errmsg);
    }
    S->completed++;
}

/* ---------------------------------------------------------------- tests */

/* A lock whose session is never kept alive is freed after its TTL (1 s,
 * the server's minimum), not before; afterwards its token is refused with
 * 410 lease-expired (renew and release, each counted in
 * tenure_late_requests_total and logged as a safety incident) and 412 at
 * the write gate, and the next holder gets a larger token. */
static void test_expiry(void **state)
{
    const char *res = "model/expiry";
    struct http_response r;
    char path[160];
    char h[64];
    uint64_t t0;
    uint64_t t;
    uint64_t t2;
    uint64_t freed = 0;
    uint64_t late;
    char tok[48];
    json_t *j;
    (void)state;

    lockPath(path, sizeof path, res);
    t0 = monoMs();
    j = call(follower(), "PUT", path, NULL,
             "{\"holder\":\"e1\",\"ttl_ms\":1000}", 201, &r);
    t = jU64(j, "token");
    assert_int_equal(jU64(j, "ttl_ms"), 1000);
    json_decref(j);
    httpResponseFree(&r);

    while (monoMs() < t0 + 10000) {
        json_t *st = lockGet(follower(), res, NULL);
        uint64_t answered = monoMs();
        if (strcmp(jStr(st, "state"), "held") != 0) {
            assert_string_equal(jStr(st, "state"), "free");
            if (answered < t0 + 1000) {
                fail_msg("freed %" PRIu64 " ms after the acquire was sent, "
                         "before its 1000 ms TTL",
                         answered - t0);
            }
            freed = answered;
            json_decref(st);
            break;
        }
        assert_int_equal(jU64(holderAt(st, 0), "token"), t);
        json_decref(st);
        sleepMs(50);
    }
    if (freed == 0) {
        fail_msg("%s still held 10 s after a 1 s TTL", res);
    }

    /* Late renew and release: refused, and each counted and logged as a
     * safety incident. */
    late = metric(leader(), "tenure_late_requests_total");
    ifMatch(h, sizeof h, t);
    j = callProblem(leader(), "DELETE", path, h, NULL, 410, "lease-expired",
                    &r);
    assert_int_equal(jU64(j, "token"), t);
    json_decref(j);
    httpResponseFree(&r);
    j = callProblem(follower(), "PUT", path, h, NULL, 410, "lease-expired",
                    &r);
    json_decref(j);
    httpResponseFree(&r);
    assert_int_equal(metric(leader(), "tenure_late_requests_total"),
                     late + 2);
    snprintf(tok, sizeof tok, "token=%" PRIu64, t);
    if (!logHas(leader(), "safety incident", "resource=\"model/expiry\"",
                tok)) {
        fail_msg("no safety-incident log line for %s %s on the leader", res,
                 tok);
    }
    snprintf(path, sizeof path, "/v1/fence/%s?token=%" PRIu64, res, t);
    j = callProblem(follower(), "GET", path, NULL, NULL, 412, "token-stale",
                    &r);
    json_decref(j);
    httpResponseFree(&r);

    t2 = acquire(leader(), res, "{\"holder\":\"e2\",\"ttl_ms\":10000}");
    assert_true(t2 > t);
    release(leader(), res, t2);
    sameLeader();
}

/* Lock-delay: freed by expiry with lock_delay_ms 3000, the resource is in
 * "lock-delay" until lock_delay_until; an acquire meanwhile gets 409
 * lock-delay (with lock_delay_until and Retry-After), also when it would
 * wait less than the delay; one that waits longer gets the lock right
 * after the delay ends (not before). A clean release starts no delay. */
static void test_lock_delay(void **state)
{
    const char *res = "model/delay";
    struct http_response r;
    struct bg waiter;
    char path[160];
    uint64_t t1;
    uint64_t until;
    uint64_t t3;
    json_t *j;
    json_t *st;
    (void)state;

    lockPath(path, sizeof path, res);
    t1 = acquire(follower(), res,
                 "{\"holder\":\"d1\",\"ttl_ms\":1000,\"lock_delay_ms\":3000}");
    st = waitFor(leader(), res, stateIs, "lock-delay", 8000, "lock-delay");
    until = jU64(st, "lock_delay_until_ms");
    assert_true(until > 0);
    assert_int_equal(json_array_size(json_object_get(st, "holders")), 0);
    json_decref(st);

    j = callProblem(follower(), "PUT", path, NULL,
                    "{\"holder\":\"d2\",\"ttl_ms\":5000}", 409, "lock-delay",
                    &r);
    assert_int_equal(jU64(j, "lock_delay_until_ms"), until);
    assert_non_null(r.retry_after);
    assert_true(strtol(r.retry_after, NULL, 10) >= 1);
    json_decref(j);
    httpResponseFree(&r);
    /* A wait that ends before the delay does is refused at once. */
    j = callProblem(leader(), "PUT", path, NULL,
                    "{\"holder\":\"d2\",\"ttl_ms\":5000,\"wait_ms\":200}",
                    409, "lock-delay", &r);
    json_decref(j);
    httpResponseFree(&r);

    /* A wait that outlasts the delay: granted once it ends. */
    bgAcquire(&waiter, follower(), res,
              "{\"holder\":\"d3\",\"ttl_ms\":10000,\"wait_ms\":15000,"
              "\"lock_delay_ms\":3000}");
    bgJoin(&waiter);
    if (waiter.status != 201) {
        fail_msg("waiter through the lock-delay: %d %s", waiter.status,
                 waiter.text);
    }
    t3 = waiter.token;
    assert_true(t3 > t1);
    /* Cluster time is the leader's wall clock: the grant cannot have been
     * answered before lock_delay_until. */
    if (waiter.done_wall_ms + 5 < until) {
        fail_msg("granted %" PRIu64 " ms before the lock-delay ended",
                 until - waiter.done_wall_ms);
    }
    st = lockGet(follower(), res, NULL);
    assert_string_equal(jStr(st, "state"), "held");
    assert_string_equal(jStr(holderAt(st, 0), "holder"), "d3");
    json_decref(st);

    /* A clean release (even of a lock that asked for a lock-delay) leaves
     * the resource free at once. */
    release(leader(), res, t3);
    st = lockGet(follower(), res, NULL);
    assert_string_equal(jStr(st, "state"), "free");
    json_decref(st);
    release(leader(), res,
            acquire(follower(), res, "{\"holder\":\"d4\",\"ttl_ms\":5000}"));
    sameLeader();
}

/* Shared locks: two readers at once; a writer waits; a third reader is
 * refused while the writer waits (writer preference) and a fourth queues
 * behind it; when both readers leave the writer gets the lock, then the
 * queued reader after the writer leaves. Tokens keep increasing. */
static void test_shared_writer_preference(void **state)
{
    const char *res = "model/shared";
    struct http_response r;
    struct bg writer;
    struct bg reader;
    char path[160];
    uint64_t ta;
    uint64_t tb;
    json_t *st;
    json_t *j;
    (void)state;

    lockPath(path, sizeof path, res);
    ta = acquire(follower(), res,
                 "{\"holder\":\"r1\",\"ttl_ms\":15000,\"mode\":\"shared\"}");
    tb = acquire(leader(), res,
                 "{\"holder\":\"r2\",\"ttl_ms\":15000,\"mode\":\"shared\"}");
    assert_true(tb > ta);
    st = lockGet(follower(), res, NULL);
    assert_string_equal(jStr(st, "mode"), "shared");
    assert_int_equal(json_array_size(json_object_get(st, "holders")), 2);
    json_decref(st);

    bgAcquire(&writer, follower(), res,
              "{\"holder\":\"w\",\"ttl_ms\":15000,\"wait_ms\":15000}");
    waitQueue(res, 1);
    j = callProblem(leader(), "PUT", path, NULL,
                    "{\"holder\":\"r3\",\"ttl_ms\":15000,\"mode\":\"shared\"}",
                    409, "lock-held", &r);
    assert_int_equal(jU64(j, "queue_len"), 1);
    json_decref(j);
    httpResponseFree(&r);
    bgAcquire(&reader, leader(), res,
              "{\"holder\":\"r4\",\"ttl_ms\":15000,\"mode\":\"shared\","
              "\"wait_ms\":15000}");
    waitQueue(res, 2);

    release(leader(), res, ta);
    st = lockGet(leader(), res, NULL);
    assert_string_equal(jStr(st, "mode"), "shared");
    assert_int_equal(json_array_size(json_object_get(st, "holders")), 1);
    assert_int_equal(jU64(st, "queue_len"), 2);
    json_decref(st);

    release(follower(), res, tb);
    bgJoin(&writer);
    if (writer.status != 201) {
        fail_msg("writer: %d %s", writer.status, writer.text);
    }
    assert_true(writer.token > tb);
    st = lockGet(follower(), res, NULL);
    assert_string_equal(jStr(st, "mode"), "exclusive");
    assert_string_equal(jStr(holderAt(st, 0), "holder"), "w");
    assert_int_equal(jU64(st, "queue_len"), 1);
    json_decref(st);

    release(leader(), res, writer.token);
    bgJoin(&reader);
    if (reader.status != 201) {
        fail_msg("reader behind the writer: %d %s", reader.status,
                 reader.text);
    }
    assert_true(reader.token > writer.token);
    st = lockGet(follower(), res, NULL);
    assert_string_equal(jStr(st, "mode"), "shared");
    assert_string_equal(jStr(holderAt(st, 0), "holder"), "r4");
    json_decref(st);
    release(follower(), res, reader.token);
    sameLeader();
}

/* A semaphore of 3 permits: three holders, each with its own (increasing)
 * token, listed in the state; the fourth is refused (409); a request
 * naming another permit count is refused (422); a freed permit goes to
 * the next acquire; renewing one permit leaves the others alone. */
static void test_semaphore(void **state)
{
    const char *res = "model/sem";
    static const char body_fmt[] =
        "{\"holder\":\"p%d\",\"ttl_ms\":15000,\"mode\":\"semaphore\","
        "\"permits\":%d}";
    struct http_response r;
    char path[160];
    char body[160];
    char h[64];
    uint64_t t[4];
    json_t *st;
    json_t *j;
    (void)state;

    lockPath(path, sizeof path, res);
    for (int k = 0; k < 3; k++) {
        snprintf(body, sizeof body, body_fmt, k, 3);
        t[k] = acquire(k % 2 ? leader() : follower(), res, body);
        if (k > 0) {
            assert_true(t[k] > t[k - 1]);
        }
    }
    st = lockGet(follower(), res, NULL);
    assert_string_equal(jStr(st, "mode"), "semaphore");
    assert_int_equal(jU64(st, "permits"), 3);
    assert_int_equal(json_array_size(json_object_get(st, "holders")), 3);
    for (size_t k = 0; k < 3; k++) {
        assert_int_equal(jU64(holderAt(st, k), "token"), t[k]);
    }
    json_decref(st);

    snprintf(body, sizeof body, body_fmt, 3, 3);
    j = callProblem(follower(), "PUT", path, NULL, body, 409, "lock-held",
                    &r);
    json_decref(j);
    httpResponseFree(&r);
    snprintf(body, sizeof body, body_fmt, 3, 2);
    j = callProblem(leader(), "PUT", path, NULL, body, 422, "invalid-value",
                    &r);
    json_decref(j);
    httpResponseFree(&r);

    release(follower(), res, t[1]);
    snprintf(body, sizeof body, body_fmt, 3, 3);
    t[3] = acquire(leader(), res, body);
    assert_true(t[3] > t[2]);

    ifMatch(h, sizeof h, t[0]);
    j = call(follower(), "PUT", path, h, NULL, 200, &r);
    assert_int_equal(etag(&r), t[0]);
    json_decref(j);
    httpResponseFree(&r);
    st = lockGet(leader(), res, NULL);
    assert_int_equal(json_array_size(json_object_get(st, "holders")), 3);
    json_decref(st);
    release(leader(), res, t[0]);
    release(leader(), res, t[2]);
    release(leader(), res, t[3]);
    st = lockGet(follower(), res, NULL);
    assert_string_equal(jStr(st, "state"), "free");
    json_decref(st);
    sameLeader();
}

/* FIFO hand-off: a holder, then four waiters in order; the first waiter's
 * session dies while it waits (410 session-expired, skipped); each release
 * hands the lock to the next live waiter in the same commit (the read right
 * after the 204 already shows the next holder), in FIFO order with
 * increasing tokens. Meanwhile, on another resource, a waiter whose
 * wait_ms runs out gets 409 lock-held. */
static void test_queue_handoff(void **state)
{
    const char *res = "model/queue";
    const char *res2 = "model/queue-timeout";
    struct http_response r;
    struct bg dead;
    struct bg w[3];
    struct bg late;
    char body[160];
    uint64_t th;
    uint64_t th2;
    uint64_t sid;
    uint64_t prev;
    json_t *j;
    json_t *st;
    (void)state;

    /* Runs out while the rest goes on. */
    th2 = acquire(leader(), res2, "{\"holder\":\"h2\",\"ttl_ms\":20000}");
    bgAcquire(&late, follower(), res2,
              "{\"holder\":\"late\",\"ttl_ms\":10000,\"wait_ms\":1500}");

    th = acquire(leader(), res, "{\"holder\":\"h\",\"ttl_ms\":20000}");
    j = call(leader(), "POST", "/v1/sessions", NULL,
             "{\"holder\":\"dies\",\"ttl_ms\":1000}", 201, &r);
    sid = jU64(j, "session");
    json_decref(j);
    httpResponseFree(&r);
    snprintf(body, sizeof body, "{\"session\":%" PRIu64 ",\"wait_ms\":15000}",
             sid);
    bgAcquire(&dead, follower(), res, body);
    waitQueue(res, 1);
    for (int k = 0; k < 3; k++) {
        snprintf(body, sizeof body,
                 "{\"holder\":\"q%d\",\"ttl_ms\":20000,\"wait_ms\":15000}", k);
        bgAcquire(&w[k], k % 2 ? leader() : follower(), res, body);
        waitQueue(res, (uint64_t)k + 2);
    }

    /* The session of the first waiter is never kept alive. */
    bgJoin(&dead);
    if (dead.status != 410 || strcmp(dead.problem, "session-expired") != 0) {
        fail_msg("waiter whose session expired: %d %s", dead.status,
                 dead.text);
    }
    waitQueue(res, 3);

    prev = th;
    release(follower(), res, th);
    for (int k = 0; k < 3; k++) {
        st = lockGet(leader(), res, NULL);
        assert_string_equal(jStr(st, "state"), "held");
        {
            char want[8];
            snprintf(want, sizeof want, "q%d", k);
            assert_string_equal(jStr(holderAt(st, 0), "holder"), want);
        }
        assert_int_equal(jU64(st, "queue_len"), (uint64_t)(2 - k));
        json_decref(st);
        bgJoin(&w[k]);
        if (w[k].status != 201) {
            fail_msg("waiter q%d: %d %s", k, w[k].status, w[k].text);
        }
        assert_true(w[k].token > prev);
        prev = w[k].token;
        release(k % 2 ? follower() : leader(), res, w[k].token);
    }
    st = lockGet(follower(), res, NULL);
    assert_string_equal(jStr(st, "state"), "free");
    json_decref(st);

    bgJoin(&late);
    if (late.status != 409 || strcmp(late.problem, "lock-held") != 0) {
        fail_msg("waiter whose wait ran out: %d %s", late.status, late.text);
    }
    /* It waited (about 1.5 s of cluster time), not for ever. */
    if (late.done_ms - late.sent_ms < 1000 ||
        late.done_ms - late.sent_ms > 9000) {
        fail_msg("a 1500 ms wait answered after %" PRIu64 " ms",
                 late.done_ms - late.sent_ms);
    }
    release(leader(), res2, th2);
    sameLeader();
}

/* Idempotency-Key: the retry of an acquire (through another node) gets the
 * original answer (200, same token, Idempotent-Replayed: true) and grants
 * nothing; the retry of a release too (204 replayed), also after someone
 * newer took the lock, which stays untouched; so does a replay of the
 * original acquire by then. */
static void test_idempotent_replay(void **state)
{
    const char *res = "model/idem";
    char k1[96];
    char k2[96];
    char h[192];
    char path[160];
    struct http_response r;
    const char *rep;
    uint64_t t;
    uint64_t tj;
    json_t *j;
    json_t *st;
    static const char body[] = "{\"holder\":\"i\",\"ttl_ms\":15000}";
    (void)state;

    lockPath(path, sizeof path, res);
    snprintf(k1, sizeof k1, "Idempotency-Key: model-acquire-%d-%" PRIu64,
             (int)getpid(), wallMs());
    snprintf(k2, sizeof k2, "Idempotency-Key: model-release-%d-%" PRIu64,
             (int)getpid(), wallMs());

    j = call(follower(), "PUT", path, k1, body, 201, &r);
    t = jU64(j, "token");
    rep = httpHeader(&r, "Idempotent-Replayed");
    assert_true(rep == NULL || strcmp(rep, "true") != 0);
    json_decref(j);
    httpResponseFree(&r);

    j = call(leader(), "PUT", path, k1, body, 200, &r);
    assert_int_equal(jU64(j, "token"), t);
    assert_int_equal(etag(&r), t);
    assert_true(json_is_true(json_object_get(j, "replayed")));
    rep = httpHeader(&r, "Idempotent-Replayed");
    assert_non_null(rep);
    assert_string_equal(rep, "true");
    json_decref(j);
    httpResponseFree(&r);
    /* One grant only: anybody else is refused. */
    j = callProblem(follower(), "PUT", path, NULL,
                    "{\"holder\":\"other\",\"ttl_ms\":5000}", 409,
                    "lock-held", &r);
    assert_int_equal(jU64(j, "holder_token"), t);
    json_decref(j);
    httpResponseFree(&r);

    snprintf(h, sizeof h, "If-Match: \"%" PRIu64 "\"\r\n%s", t, k2);
    j = call(leader(), "DELETE", path, h, NULL, 204, &r);
    json_decref(j);
    httpResponseFree(&r);
    j = call(follower(), "DELETE", path, h, NULL, 204, &r);
    rep = httpHeader(&r, "Idempotent-Replayed");
    assert_non_null(rep);
    assert_string_equal(rep, "true");
    json_decref(j);
    httpResponseFree(&r);

    /* Someone newer takes it; the old retries leave it alone. */
    tj = acquire(leader(), res, "{\"holder\":\"j\",\"ttl_ms\":15000}");
    assert_true(tj > t);
    j = call(follower(), "DELETE", path, h, NULL, 204, &r);
    json_decref(j);
    httpResponseFree(&r);
    j = call(leader(), "PUT", path, k1, body, 200, &r);
    assert_int_equal(jU64(j, "token"), t);
    json_decref(j);
    httpResponseFree(&r);
    st = lockGet(follower(), res, NULL);
    assert_string_equal(jStr(st, "state"), "held");
    assert_int_equal(json_array_size(json_object_get(st, "holders")), 1);
    assert_int_equal(jU64(holderAt(st, 0), "token"), tj);
    assert_string_equal(jStr(holderAt(st, 0), "holder"), "j");
    json_decref(st);
    release(follower(), res, tj);
    sameLeader();
}

/* Watch: a long-poll (index, wait=5s) on a follower returns soon after the
 * lock changes, with a larger index; with nothing changing, one with
 * wait=2s returns after about 2 s with the same index; an index already
 * passed answers at once. */
static void test_watch(void **state)
{
    const char *res = "model/watch";
    struct bg poll;
    char path[256];
    uint64_t t;
    uint64_t index;
    uint64_t index2;
    uint64_t t_change;
    uint64_t start;
    json_t *st;
    (void)state;

    t = acquire(leader(), res, "{\"holder\":\"watched\",\"ttl_ms\":15000}");
    st = lockGet(follower(), res, NULL);
    index = jU64(st, "index");
    assert_true(index > 0);
    json_decref(st);

    snprintf(path, sizeof path, "/v1/locks/%s?index=%" PRIu64 "&wait=5s", res,
             index);
    bgStart(&poll, follower(), "GET", path, NULL, 15000);
    sleepMs(700);
    t_change = monoMs();
    release(leader(), res, t);
    bgJoin(&poll);
    if (poll.status != 200) {
        fail_msg("long-poll: %d %s", poll.status, poll.text);
    }
    st = json_loads(poll.text, 0, NULL);
    assert_non_null(st);
    assert_string_equal(jStr(st, "state"), "free");
    index2 = jU64(st, "index");
    assert_true(index2 > index);
    json_decref(st);
    if (poll.done_ms < t_change || poll.done_ms - t_change > 2500) {
        fail_msg("long-poll answered %" PRId64 " ms after the change",
                 (int64_t)(poll.done_ms - t_change));
    }

    /* Nothing changes: answered when the wait ends. */
    snprintf(path, sizeof path, "index=%" PRIu64 "&wait=2s", index2);
    start = monoMs();
    st = lockGet(follower(), res, path);
    if (monoMs() - start < 1900 || monoMs() - start > 6000) {
        fail_msg("a 2 s long-poll without a change answered after %" PRIu64
                 " ms",
                 monoMs() - start);
    }
    assert_int_equal(jU64(st, "index"), index2);
    assert_string_equal(jStr(st, "state"), "free");
    json_decref(st);

    /* An index from the past: at once. */
    snprintf(path, sizeof path, "index=%" PRIu64 "&wait=5s", index);
    start = monoMs();
    st = lockGet(leader(), res, path);
    assert_true(monoMs() - start < 1500);
    assert_int_equal(jU64(st, "index"), index2);
    json_decref(st);
    sameLeader();
}

/* The daemon's slot for a resource in its table of recent changes
 * (server/dispatch.c: FNV-1a 64, low bit set, 65536 slots). */
static unsigned changedSlot(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return (unsigned)((h | 1) & 65535);
}

/* A watched resource that was freed (so forgotten by the lock table) and
 * whose slot of recent changes was then taken by another resource: a
 * long-poll from before the free must still answer at once (not sleep
 * through its wait), and the index it returns must be a resume point that
 * parks the next long-poll (not 0, which would answer at once forever). */
static void test_watch_forgotten_slot_reused(void **state)
{
    const char *res = "model/forgotten";
    char other[64];
    char path[128];
    uint64_t t;
    uint64_t held_index;
    uint64_t index;
    uint64_t start;
    json_t *st;
    (void)state;

    for (int i = 0;; i++) {
        snprintf(other, sizeof other, "model/slot%d", i);
        if (changedSlot(other) == changedSlot(res)) {
            break;
        }
        assert_true(i < 10000000);
    }
    t = acquire(leader(), res, "{\"holder\":\"a\",\"ttl_ms\":15000}");
    st = lockGet(leader(), res, NULL);
    held_index = jU64(st, "index");
    json_decref(st);
    release(leader(), res, t);
    t = acquire(leader(), other, "{\"holder\":\"b\",\"ttl_ms\":15000}");
    release(leader(), other, t);

    snprintf(path, sizeof path, "index=%" PRIu64 "&wait=5s", held_index);
    start = monoMs();
    st = lockGet(leader(), res, path);
    if (monoMs() - start > 1500) {
        fail_msg("a long-poll from before the free answered after %" PRIu64
                 " ms",
                 monoMs() - start);
    }
    assert_string_equal(jStr(st, "state"), "free");
    index = jU64(st, "index");
    assert_true(index > held_index);
    json_decref(st);

    /* Resuming from that index waits. */
    snprintf(path, sizeof path, "index=%" PRIu64 "&wait=2s", index);
    start = monoMs();
    st = lockGet(leader(), res, path);
    if (monoMs() - start < 1900) {
        fail_msg("a long-poll resumed from index %" PRIu64
                 " answered after %" PRIu64 " ms, without a change",
                 index, monoMs() - start);
    }
    json_decref(st);
    sameLeader();
}

/* Issue 3's safety-incident accounting: the log line of a release that
 * arrives after its lease expired names the resource, the holder, and how
 * late it was. */
static void test_late_release_logged_with_holder(void **state)
{
    const char *res = "model/late-log";
    uint64_t t;
    char tok[48];
    char path[160];
    char h[64];
    struct http_response r;
    json_t *j;
    (void)state;

    t = acquire(follower(), res,
                "{\"holder\":\"late-holder-7\",\"ttl_ms\":1000}");
    json_decref(waitFor(leader(), res, stateIs, "free", 8000, "expiry"));
    lockPath(path, sizeof path, res);
    ifMatch(h, sizeof h, t);
    j = callProblem(leader(), "DELETE", path, h, NULL, 410, "lease-expired",
                    &r);
    json_decref(j);
    httpResponseFree(&r);
    snprintf(tok, sizeof tok, "token=%" PRIu64, t);
    if (!logHas(leader(), "safety incident", tok, "resource=")) {
        fail_msg("no safety-incident line for %s", tok);
    }
    if (!logHas(leader(), "safety incident", tok, "late-holder-7")) {
        fail_msg("the safety-incident line for %s does not name the holder "
                 "(late-holder-7) nor how late the release was "
                 "(server/dispatch.c: op, resource and token only)",
                 tok);
    }
    S->completed++;
}

/* A waiter whose HTTP client goes away (closes the connection while its
 * acquire waits) has its request withdrawn (docs/http.md, "Connections"):
 * when the holder releases, the next live waiter gets the lock, not the
 * departed one. */
static void test_abandoned_waiter_withdrawn(void **state)
{
    const char *res = "model/abandoned";
    struct http_response r;
    struct bg live;
    char path[160];
    uint64_t th;
    uint64_t t_release;
    json_t *st;
    int status;
    (void)state;

    th = acquire(leader(), res, "{\"holder\":\"h\",\"ttl_ms\":20000}");
    lockPath(path, sizeof path, res);
    /* The client gives up after 700 ms and closes its connection. */
    status = httpRequestTimeout(port(leader()), "PUT", path, NULL,
                                "{\"holder\":\"gone\",\"ttl_ms\":20000,"
                                "\"wait_ms\":20000}",
                                700, &r);
    assert_int_equal(status, -1);
    httpResponseFree(&r);
    bgAcquire(&live, leader(), res,
              "{\"holder\":\"live\",\"ttl_ms\":10000,\"wait_ms\":4000}");
    sleepMs(300);
    t_release = monoMs();
    release(leader(), res, th);
    bgJoin(&live);
    st = lockGet(leader(), res, NULL);
    if (live.status != 201) {
        char *dump = json_dumps(st, JSON_COMPACT);
        fail_msg("the live waiter got %d %" PRIu64 " ms after the release "
                 "(%s); the lock is now: %s",
                 live.status, live.done_ms - t_release, live.problem,
                 dump ? dump : "?");
    }
    assert_string_equal(jStr(holderAt(st, 0), "holder"), "live");
    json_decref(st);
    release(leader(), res, live.token);
    S->completed++;
}

/* valid_for_ms is a promise (docs/http.md): "how long you may act on the
 * lock, measured from when you sent the request". It must hold for a lock
 * acquired in an existing session too: a session of 2 s opened and never
 * kept alive, a lock acquired in it 1.4 s later; the lock must stay held
 * until at least the acquire's send time + valid_for_ms (else another
 * client can get it while this one is still told it may write). */
static void test_valid_for_honoured_in_session(void **state)
{
    const char *res = "model/valid-for";
    struct http_response r;
    char path[160];
    char body[96];
    uint64_t sid;
    uint64_t t_send;
    uint64_t valid_for;
    uint64_t token;
    uint64_t freed = 0;
    json_t *j;
    (void)state;

    j = call(leader(), "POST", "/v1/sessions", NULL,
             "{\"holder\":\"v\",\"ttl_ms\":2000}", 201, &r);
    sid = jU64(j, "session");
    json_decref(j);
    httpResponseFree(&r);
    sleepMs(1400);

    lockPath(path, sizeof path, res);
    snprintf(body, sizeof body, "{\"session\":%" PRIu64 "}", sid);
    t_send = monoMs();
    j = call(leader(), "PUT", path, NULL, body, 201, &r);
    token = jU64(j, "token");
    valid_for = jU64(j, "valid_for_ms");
    assert_true(valid_for > 0);
    json_decref(j);
    httpResponseFree(&r);

    while (monoMs() < t_send + valid_for + 8000) {
        json_t *st = lockGet(follower(), res, NULL);
        uint64_t answered = monoMs();
        if (strcmp(jStr(st, "state"), "held") != 0) {
            freed = answered;
            json_decref(st);
            break;
        }
        assert_int_equal(jU64(holderAt(st, 0), "token"), token);
        json_decref(st);
        sleepMs(50);
    }
    if (freed == 0) {
        fail_msg("%s never expired", res);
    }
    if (freed < t_send + valid_for) {
        fail_msg("the lock acquired in session %" PRIu64 " was freed %" PRIu64
                 " ms after the acquire was sent, but the 201 said "
                 "valid_for_ms %" PRIu64
                 ": an acquire does not extend its session's lease on the "
                 "leader, while the answer promises a full TTL",
                 sid, freed - t_send, valid_for);
    }
    S->completed++;
}

/* wait_ms without a session: the shim opens a session of ttl_ms for this
 * one lock. A wait longer than that TTL must still be a wait of wait_ms
 * (DESIGN §3: "wait up to wait_ms in a server-side FIFO queue"): the
 * holder releases after 2.5 s, the waiter (ttl_ms 1000, wait_ms 6000)
 * gets the lock. */
static void test_wait_longer_than_ttl(void **state)
{
    const char *res = "model/long-wait";
    struct bg waiter;
    uint64_t th;
    (void)state;

    th = acquire(leader(), res, "{\"holder\":\"h\",\"ttl_ms\":20000}");
    bgAcquire(&waiter, follower(), res,
              "{\"holder\":\"w\",\"ttl_ms\":1000,\"wait_ms\":6000}");
    waitQueue(res, 1);
    sleepMs(2500);
    release(leader(), res, th);
    bgJoin(&waiter);
    if (waiter.status != 201) {
        fail_msg("a waiter (ttl_ms 1000, wait_ms 6000) for a lock released "
                 "after 2.5 s got %d after %" PRIu64 " ms: %s",
                 waiter.status, waiter.done_ms - waiter.sent_ms, waiter.text);
    }
    release(leader(), res, waiter.token);
    S->completed++;
}

/* A queued acquire on a lock another session holds is parked on the
 * leader until the next entry or timer tick (tenure_acquires_parked_total):
 * alone, it still joins the queue within a tick; queued behind it, a second
 * one keeps its place; the release grants them in order. An acquire on a
 * free lock is never parked. */
static void test_parked_acquire(void **state)
{
    const char *res = "model/parked";
    const char *free_res = "model/parked-free";
    struct bg w[2];
    uint64_t th;
    uint64_t t;
    uint64_t parked;
    uint64_t start;
    (void)state;

    parked = metric(leader(), "tenure_acquires_parked_total");
    t = acquire(follower(), free_res,
                "{\"holder\":\"f\",\"ttl_ms\":20000,\"wait_ms\":5000}");
    assert_int_equal(metric(leader(), "tenure_acquires_parked_total"),
                     parked);
    release(leader(), free_res, t);

    th = acquire(leader(), res, "{\"holder\":\"h\",\"ttl_ms\":20000}");
    for (int k = 0; k < 2; k++) {
        char body[96];
        snprintf(body, sizeof body,
                 "{\"holder\":\"p%d\",\"ttl_ms\":20000,\"wait_ms\":15000}",
                 k);
        start = monoMs();
        bgAcquire(&w[k], k ? leader() : follower(), res, body);
        waitQueue(res, (uint64_t)k + 1);
        /* The 10 ms tick proposes it; 2 s leaves room for a slow machine,
         * and without the tick it would sit parked for ever. */
        if (monoMs() - start > 2000) {
            fail_msg("a parked acquire joined the queue after %" PRIu64
                     " ms", monoMs() - start);
        }
    }
    /* Each was parked, unless it arrived while another command (an expiry,
     * a tick) was about to be proposed anyway: at least one of the two. */
    {
        uint64_t now = metric(leader(), "tenure_acquires_parked_total");
        if (now < parked + 1 || now > parked + 2) {
            fail_msg("parked acquires: %" PRIu64 " for 2 queued waiters",
                     now - parked);
        }
    }
    release(follower(), res, th);
    bgJoin(&w[0]);
    if (w[0].status != 201) {
        fail_msg("first parked waiter: %d %s", w[0].status, w[0].text);
    }
    assert_true(w[0].token > th);
    release(leader(), res, w[0].token);
    bgJoin(&w[1]);
    if (w[1].status != 201) {
        fail_msg("second parked waiter: %d %s", w[1].status, w[1].text);
    }
    assert_true(w[1].token > w[0].token);
    release(leader(), res, w[1].token);
    sameLeader();
}

/* Last: a quiet teardown only when every test above ran to its end (else
 * the node logs are dumped for the failures above). */
static void test_all_passed(void **state)
{
    (void)state;
    if (S->completed == 13) {
        clusterPassed(&S->cluster);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_lock_delay),
        cmocka_unit_test(test_shared_writer_preference),
        cmocka_unit_test(test_semaphore),
        cmocka_unit_test(test_queue_handoff),
        cmocka_unit_test(test_idempotent_replay),
        cmocka_unit_test(test_watch),
        cmocka_unit_test(test_watch_forgotten_slot_reused),
        cmocka_unit_test(test_late_release_logged_with_holder),
        cmocka_unit_test(test_abandoned_waiter_withdrawn),
        cmocka_unit_test(test_valid_for_honoured_in_session),
        cmocka_unit_test(test_wait_longer_than_ttl),
        cmocka_unit_test(test_parked_acquire),
        cmocka_unit_test(test_all_passed),
    };
    return cmocka_run_group_tests(tests, groupSetUp, groupTearDown);
}
