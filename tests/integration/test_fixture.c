/* The test fixtures themselves: the HTTP client against canned servers, and
 * the cluster fixture against real tenured processes (leader election, kill
 * of the leader, restart). */
#include "lib/test.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/cluster.h"
#include "lib/http.h"

/* ------------------------------------------------- canned HTTP servers */

enum canned_mode {
    CANNED_ECHO,      /* 200 with Content-Length, body = the raw request */
    CANNED_CHUNKED,   /* 409 with a chunked problem+json body */
    CANNED_SILENT,    /* accepts, reads, never answers */
    CANNED_TRUNCATED, /* promises 100 bytes, sends 5, closes */
};

struct canned
{
    int port;
    pid_t pid;
};

static int64_t nowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void writeAll(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) {
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Child side: serve one connection in MODE, then exit. */
static void cannedServe(int lfd, enum canned_mode mode)
{
    alarm(10); /* never outlive a broken test */
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
        _exit(1);
    }
    char req[8192];
    size_t len = 0;
    size_t want = 0; /* total bytes of the request once known */
    while (len < sizeof req - 1) {
        ssize_t n = read(fd, req + len, sizeof req - 1 - len);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
        req[len] = '\0';
        char *end = strstr(req, "\r\n\r\n");
        if (end != NULL && want == 0) {
            want = (size_t)(end + 4 - req);
            char *cl = strstr(req, "Content-Length: ");
            if (cl != NULL && cl < end) {
                want += strtoul(cl + 16, NULL, 10);
            }
        }
        if (want != 0 && len >= want) {
            break;
        }
    }
    char out[16384];
    int n = 0;
    switch (mode) {
    case CANNED_ECHO:
        n = snprintf(out, sizeof out,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     "ETag: \"77\"\r\nLocation: /v1/locks/x\r\n"
                     "X-Padded:   spaced value  \r\n"
                     "Content-Length: %zu\r\n\r\n%.*s",
                     len, (int)len, req);
        break;
    case CANNED_CHUNKED:
        n = snprintf(out, sizeof out,
                     "HTTP/1.1 100 Continue\r\n\r\n"
                     "HTTP/1.1 409 Conflict\r\n"
                     "Content-Type: application/problem+json\r\n"
                     "Retry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "6\r\n{\"hold\r\n"
                     "c;ext=1\r\ner\":\"alice\"}\r\n"
                     "0\r\nX-Trailer: t\r\n\r\n");
        break;
    case CANNED_SILENT:
        sleep(5);
        break;
    case CANNED_TRUNCATED:
        n = snprintf(out, sizeof out,
                     "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello");
        break;
    }
    if (n > 0) {
        writeAll(fd, out, (size_t)n);
    }
    close(fd);
    _exit(0);
}

static void cannedStart(struct canned *s, enum canned_mode mode)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in sin = { .sin_family = AF_INET };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t slen = sizeof sin;
    assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(lfd, 4), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &slen), 0);
    s->port = ntohs(sin.sin_port);
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        cannedServe(lfd, mode);
    }
    close(lfd);
}

static void cannedStop(struct canned *s)
{
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
}

/* The client sends a well-formed request and parses a Content-Length reply. */
static void test_http_content_length(void **state)
{
    (void)state;
    struct canned s;
    cannedStart(&s, CANNED_ECHO);
    struct http_response r;
    int status = httpRequest(s.port, "PUT", "/v1/locks/demo",
                             "If-Match: \"5\"\nIdempotency-Key: k1\r\n",
                             "{\"holder\":\"a\"}", &r);
    cannedStop(&s);
    assert_int_equal(status, 200);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.error, "");
    assert_string_equal(r.content_type, "text/plain");
    assert_string_equal(r.location, "/v1/locks/x");
    assert_null(r.retry_after);
    assert_string_equal(httpHeader(&r, "x-padded"), "spaced value");
    uint64_t token = 0;
    assert_int_equal(httpETagToken(&r, &token), 0);
    assert_int_equal(token, 77);
    /* What the server saw. */
    assert_non_null(strstr(r.body, "PUT /v1/locks/demo HTTP/1.1\r\n"));
    assert_non_null(strstr(r.body, "Host: 127.0.0.1:"));
    assert_non_null(strstr(r.body, "Content-Length: 14\r\n"));
    assert_non_null(strstr(r.body, "Content-Type: application/json\r\n"));
    assert_non_null(strstr(r.body, "If-Match: \"5\"\r\n"));
    assert_non_null(strstr(r.body, "Idempotency-Key: k1\r\n"));
    assert_non_null(strstr(r.body, "\r\n\r\n{\"holder\":\"a\"}"));
    assert_int_equal(r.body_len, strlen(r.body));
    httpResponseFree(&r);
    httpResponseFree(&r); /* twice is fine */
}

/* Interim 1xx replies are skipped and chunked bodies are decoded. */
static void test_http_chunked(void **state)
{
    (void)state;
    struct canned s;
    cannedStart(&s, CANNED_CHUNKED);
    struct http_response r;
    int status = httpRequest(s.port, "GET", "/x", NULL, NULL, &r);
    cannedStop(&s);
    assert_int_equal(status, 409);
    assert_string_equal(r.retry_after, "3");
    assert_string_equal(r.content_type, "application/problem+json");
    assert_string_equal(r.body, "{\"holder\":\"alice\"}");
    assert_int_equal(r.body_len, 18);
    uint64_t token;
    assert_int_equal(httpETagToken(&r, &token), -1);
    httpResponseFree(&r);
}

/* A server that never answers costs the timeout, not more. */
static void test_http_timeout(void **state)
{
    (void)state;
    struct canned s;
    cannedStart(&s, CANNED_SILENT);
    struct http_response r;
    int64_t t0 = nowMs();
    int status = httpRequestTimeout(s.port, "GET", "/", NULL, NULL, 300, &r);
    int64_t took = nowMs() - t0;
    cannedStop(&s);
    assert_int_equal(status, -1);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.error, "300 ms"));
    assert_true(took >= 250 && took < 3000);
    httpResponseFree(&r);
}

/* A body cut short and a refused connection are errors, not statuses. */
static void test_http_errors(void **state)
{
    (void)state;
    struct canned s;
    cannedStart(&s, CANNED_TRUNCATED);
    struct http_response r;
    assert_int_equal(httpRequest(s.port, "GET", "/", NULL, NULL, &r), -1);
    cannedStop(&s);
    assert_non_null(strstr(r.error, "closed"));
    httpResponseFree(&r);

    /* A port nobody listens on: the canned server is gone now. */
    assert_int_equal(httpRequest(s.port, "GET", "/", NULL, NULL, &r), -1);
    assert_non_null(strstr(r.error, "connect"));
    httpResponseFree(&r);
}

/* ------------------------------------------------------ the cluster */

struct fixture
{
    struct tn_cluster cluster;
};

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
    clusterDestroy(&f->cluster);
    free(f);
    return 0;
}

/* GET /v1/cluster on node I, parsed; NULL when not a 200 with JSON. */
static json_t *getCluster(struct tn_cluster *c, int i)
{
    struct http_response r;
    int status = httpRequest(clusterHttpPort(c, i), "GET", "/v1/cluster",
                             NULL, NULL, &r);
    json_t *j = NULL;
    if (status == 200) {
        j = json_loads(r.body, 0, NULL);
    }
    httpResponseFree(&r);
    return j;
}

static void assertHealthy(struct tn_cluster *c, int i)
{
    struct http_response r;
    int status =
        httpRequest(clusterHttpPort(c, i), "GET", "/healthz", NULL, NULL, &r);
    if (status != 200) {
        clusterFailed(c);
        fail_msg("node %d: GET /healthz: %d %s", clusterNodeId(i), status,
                 r.error);
    }
    httpResponseFree(&r);
}

/* Waits until node I reports leader_id LEADER + 1. */
static bool waitKnowsLeader(struct tn_cluster *c, int i, int leader, int ms)
{
    int64_t deadline = nowMs() + ms;
    while (nowMs() < deadline) {
        json_t *j = getCluster(c, i);
        json_int_t id = json_integer_value(json_object_get(j, "leader_id"));
        json_decref(j);
        if (id == clusterNodeId(leader)) {
            return true;
        }
        usleep(50 * 1000);
    }
    return false;
}

#define CHECK(c, expr)                                          \
    do {                                                        \
        if (!(expr)) {                                          \
            clusterFailed(c);                                   \
            fail_msg("%s failed: %s", #expr, (c)->errmsg);      \
        }                                                       \
    } while (0)

/* A missing daemon binary is reported at once, with its path. */
static void test_cluster_missing_binary(void **state)
{
    struct fixture *f = *state;
    const char *saved = getenv("TENURE_BIN_DIR");
    char *copy = saved ? strdup(saved) : NULL;
    setenv("TENURE_BIN_DIR", "/nonexistent-tenure-bin", 1);
    int64_t t0 = nowMs();
    int rv = clusterStart(&f->cluster, 3);
    if (copy != NULL) {
        setenv("TENURE_BIN_DIR", copy, 1);
        free(copy);
    } else {
        unsetenv("TENURE_BIN_DIR");
    }
    assert_int_equal(rv, -1);
    assert_true(nowMs() - t0 < 1000);
    assert_non_null(strstr(f->cluster.errmsg, "/nonexistent-tenure-bin/tenured"));
    clusterPassed(&f->cluster);
}

/* Three nodes elect a leader; after kill -9 of the leader the two others
 * elect a new one; the old leader restarts from its data and follows. */
static void test_cluster_failover(void **state)
{
    struct fixture *f = *state;
    struct tn_cluster *c = &f->cluster;
    CHECK(c, clusterStart(c, 3) == 0);

    int leader = clusterWaitLeader(c, 15000);
    CHECK(c, leader >= 0);
    for (int i = 0; i < 3; i++) {
        assertHealthy(c, i);
    }
    json_t *info = getCluster(c, leader);
    CHECK(c, info != NULL);
    CHECK(c, json_integer_value(json_object_get(info, "node_id")) ==
                 clusterNodeId(leader));
    CHECK(c, json_is_string(json_object_get(info, "state")) &&
                 strcmp(json_string_value(json_object_get(info, "state")),
                        "leader") == 0);
    json_int_t term1 = json_integer_value(json_object_get(info, "term"));
    json_decref(info);
    CHECK(c, term1 >= 1);
    CHECK(c, strlen(clusterRpcEndpoints(c)) > 0);

    CHECK(c, clusterKill(c, leader) == 0);
    CHECK(c, !clusterRunning(c, leader));
    int next = clusterWaitLeader(c, 15000);
    CHECK(c, next >= 0);
    CHECK(c, next != leader);
    info = getCluster(c, next);
    CHECK(c, info != NULL);
    json_int_t term2 = json_integer_value(json_object_get(info, "term"));
    json_decref(info);
    CHECK(c, term2 > term1);

    CHECK(c, clusterRestart(c, leader) == 0);
    assertHealthy(c, leader);
    CHECK(c, waitKnowsLeader(c, leader, next, 15000));
    CHECK(c, clusterWaitLeader(c, 15000) >= 0);
    CHECK(c, clusterWaitReady(c, 15000) == 0);

    /* A clean stop of a follower exits 0. */
    int follower = (next + 1) % 3;
    CHECK(c, clusterStop(c, follower) == 0);
    clusterPassed(c);
}

/* One-node mode: the same binary, a cluster of one, leads by itself. */
static void test_cluster_single_node(void **state)
{
    struct fixture *f = *state;
    struct tn_cluster *c = &f->cluster;
    CHECK(c, clusterStart(c, 1) == 0);
    CHECK(c, clusterWaitLeader(c, 10000) == 0);
    assertHealthy(c, 0);
    CHECK(c, clusterRestart(c, 0) == 0);
    CHECK(c, clusterWaitLeader(c, 10000) == 0);
    clusterPassed(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_content_length),
        cmocka_unit_test(test_http_chunked),
        cmocka_unit_test(test_http_timeout),
        cmocka_unit_test(test_http_errors),
        cmocka_unit_test_setup_teardown(test_cluster_missing_binary, setUp,
                                        tearDown),
        cmocka_unit_test_setup_teardown(test_cluster_failover, setUp,
                                        tearDown),
        cmocka_unit_test_setup_teardown(test_cluster_single_node, setUp,
                                        tearDown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
