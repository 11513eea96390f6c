/* The HTTP shim end to end (issue 5): every row of DESIGN §6 that the
 * server supports, against a cluster of 3 real tenured processes, through a
 * follower's port (which relays to the leader) and the leader's own port.
 *
 * One cluster serves the whole group (starting one costs a second or two);
 * every test uses resource names of its own. The last two tests kill the
 * leader and then a second node, so they run last.
 *
 * Every wait is bounded: HTTP calls time out (REQ_TIMEOUT_MS), polls give
 * up after a few seconds, sockets have receive/send timeouts. Threads never
 * assert: they record what they saw and the main thread checks it. */
#include "lib/test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lib/cluster.h"
#include "lib/http.h"

#define PROBLEM "https://tenure.dev/problems/"
#define REQ_TIMEOUT_MS 10000
#define N_NODES 3

/* The shared cluster of the group. */
struct suite
{
    struct tn_cluster cluster;
    int leader; /* index of the leader when the group started */
    int passed; /* tests that ran to their end */
    /* Seen while the group started: a node said ready on /readyz but could
     * not relay a request to the leader (see test_ready_node_relays). */
    char ready_but_not_relaying[512];
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

static int port(int node)
{
    return clusterHttpPort(&S->cluster, node);
}

static int leaderNode(void)
{
    return S->leader;
}

static int followerNode(void)
{
    return (S->leader + 1) % N_NODES;
}

static const char *nodeName(int node)
{
    static char names[N_NODES][32];
    snprintf(names[node], sizeof names[node], "node %d (%s)",
             clusterNodeId(node),
             node == S->leader ? "leader" : "follower");
    return names[node];
}

/* One request to @node. Fails the test when no answer came back at all. */
static int send1(int node,
                 const char *method,
                 const char *path,
                 const char *headers,
                 const char *body,
                 struct http_response *r)
{
    int status = httpRequestTimeout(port(node), method, path, headers, body,
                                    REQ_TIMEOUT_MS, r);
    if (status < 0) {
        fail_msg("%s %.200s on %s: no answer: %s", method, path,
                 nodeName(node), r->error);
    }
    return status;
}

/* Headers every answer of the shim carries. */
static void checkCommonHeaders(const struct http_response *r,
                               const char *what)
{
    const char *cc = httpHeader(r, "Cache-Control");
    const char *rid = httpHeader(r, "X-Request-Id");
    if (cc == NULL || strcmp(cc, "no-store") != 0) {
        fail_msg("%s: Cache-Control is %s, want no-store", what,
                 cc != NULL ? cc : "absent");
    }
    if (rid == NULL || rid[0] == '\0') {
        fail_msg("%s: no X-Request-Id", what);
    }
}

/* Checks the status and the common headers of the answer @r to @method
 * @path and parses its body as JSON (NULL when empty). */
static json_t *verify(int node,
                      const char *method,
                      const char *path,
                      int status,
                      int want,
                      struct http_response *r)
{
    char what[640];
    json_error_t err;
    json_t *j = NULL;

    snprintf(what, sizeof what, "%s %.400s on %s", method, path,
             nodeName(node));
    if (status != want) {
        fail_msg("%s: status %d, want %d; body: %.1500s", what, status, want,
                 r->body != NULL ? r->body : "");
    }
    checkCommonHeaders(r, what);
    if (r->body_len > 0 && strcmp(method, "HEAD") != 0) {
        j = json_loadb(r->body, r->body_len, 0, &err);
        if (j == NULL) {
            fail_msg("%s: body is not JSON (%s): %.500s", what, err.text,
                     r->body);
        }
    }
    return j;
}

/* Sends one request, checks the status and the common headers, and parses
 * the body as JSON (NULL when empty). The caller frees @r and the JSON. */
static json_t *call(int node,
                    const char *method,
                    const char *path,
                    const char *headers,
                    const char *body,
                    int want,
                    struct http_response *r)
{
    int status = send1(node, method, path, headers, body, r);
    return verify(node, method, path, status, want, r);
}

/* Same as call() for a request that is expected to fail with an RFC 9457
 * problem of type @slug: checks the media type, type, title, status,
 * instance and that request_id matches the X-Request-Id header. */
static json_t *callProblem(int node,
                           const char *method,
                           const char *path,
                           const char *headers,
                           const char *body,
                           int want,
                           const char *slug,
                           struct http_response *r)
{
    json_t *p = call(node, method, path, headers, body, want, r);
    char type[128];
    const char *rid = httpHeader(r, "X-Request-Id");

    if (p == NULL) {
        fail_msg("%s %s: %d without a problem body", method, path, want);
    }
    assert_non_null(r->content_type);
    if (strncmp(r->content_type, "application/problem+json", 24) != 0) {
        fail_msg("%s %s: Content-Type %s", method, path, r->content_type);
    }
    snprintf(type, sizeof type, PROBLEM "%s", slug);
    if (!json_is_string(json_object_get(p, "type")) ||
        strcmp(json_string_value(json_object_get(p, "type")), type) != 0) {
        fail_msg("%s %s: problem type is not %s: %s", method, path, type,
                 r->body);
    }
    assert_true(json_is_string(json_object_get(p, "title")));
    assert_int_equal(json_integer_value(json_object_get(p, "status")), want);
    assert_string_equal(json_string_value(json_object_get(p, "request_id")),
                        rid);
    return p;
}

static const char *jstr(const json_t *j, const char *key)
{
    const json_t *v = json_object_get(j, key);
    if (!json_is_string(v)) {
        char *dump = json_dumps(j, JSON_COMPACT);
        fail_msg("no string '%s' in %.1000s", key, dump != NULL ? dump : "?");
    }
    return json_string_value(v);
}

static int64_t jint(const json_t *j, const char *key)
{
    const json_t *v = json_object_get(j, key);
    if (!json_is_integer(v)) {
        char *dump = json_dumps(j, JSON_COMPACT);
        fail_msg("no integer '%s' in %.1000s", key, dump != NULL ? dump : "?");
    }
    return (int64_t)json_integer_value(v);
}

/* The ETag of @r as a token; fails when absent or malformed. */
static uint64_t etag(const struct http_response *r)
{
    uint64_t t = 0;
    if (httpETagToken(r, &t) != 0 || t == 0) {
        fail_msg("no usable ETag (%s)", r->etag != NULL ? r->etag : "absent");
    }
    /* Strong and quoted, as DESIGN §6 says: "<token>". */
    assert_true(r->etag[0] == '"');
    return t;
}

static void ifMatch(char *buf, size_t n, uint64_t token)
{
    snprintf(buf, n, "If-Match: \"%" PRIu64 "\"", token);
}

/* PUT /v1/locks/@id for @holder through @node; expects 201 and returns the
 * token. */
static uint64_t acquire(int node, const char *id, const char *holder,
                        unsigned ttl_ms)
{
    struct http_response r;
    char path[600];
    char body[256];
    uint64_t t;
    json_t *j;

    snprintf(path, sizeof path, "/v1/locks/%s", id);
    snprintf(body, sizeof body, "{\"holder\":\"%s\",\"ttl_ms\":%u}", holder,
             ttl_ms);
    j = call(node, "PUT", path, NULL, body, 201, &r);
    t = etag(&r);
    assert_int_equal((uint64_t)jint(j, "token"), t);
    json_decref(j);
    httpResponseFree(&r);
    return t;
}

static void release(int node, const char *id, uint64_t token)
{
    struct http_response r;
    char path[600];
    char h[64];
    json_t *j;

    snprintf(path, sizeof path, "/v1/locks/%s", id);
    ifMatch(h, sizeof h, token);
    j = call(node, "DELETE", path, h, NULL, 204, &r);
    assert_null(j);
    httpResponseFree(&r);
}

/* GET /v1/locks/@id (with optional @query) through @node: the state
 * document. 503s (a node that just lost its leader) are retried for up to
 * 5 s, as their Retry-After asks. */
static json_t *lockState(int node, const char *id, const char *query,
                         struct http_response *r)
{
    char path[700];
    uint64_t end = monoMs() + 5000;

    snprintf(path, sizeof path, "/v1/locks/%s%s%s", id,
             query != NULL ? "?" : "", query != NULL ? query : "");
    for (;;) {
        int status = send1(node, "GET", path, NULL, NULL, r);
        if (status != 503 || monoMs() >= end) {
            return verify(node, "GET", path, status, 200, r);
        }
        httpResponseFree(r);
        sleepMs(100);
    }
}

/* The (first) holder's token of @id as @node sees it, 0 when not held. */
static uint64_t heldToken(int node, const char *id, const char *holder)
{
    struct http_response r;
    json_t *j = lockState(node, id, NULL, &r);
    uint64_t t = 0;

    if (strcmp(jstr(j, "state"), "held") == 0) {
        json_t *h0 = json_array_get(json_object_get(j, "holders"), 0);
        assert_non_null(h0);
        if (holder != NULL) {
            assert_string_equal(jstr(h0, "holder"), holder);
        }
        t = (uint64_t)jint(j, "token");
        assert_int_equal(etag(&r), t);
    } else {
        assert_null(r.etag);
    }
    json_decref(j);
    httpResponseFree(&r);
    return t;
}

/* Polls GET /v1/locks/@id on @node until its state is @state (bounded). */
static bool waitState(int node, const char *id, const char *state,
                      unsigned timeout_ms)
{
    uint64_t end = monoMs() + timeout_ms;
    for (;;) {
        struct http_response r;
        json_t *j = lockState(node, id, NULL, &r);
        bool ok = strcmp(jstr(j, "state"), state) == 0;
        json_decref(j);
        httpResponseFree(&r);
        if (ok) {
            return true;
        }
        if (monoMs() >= end) {
            return false;
        }
        sleepMs(50);
    }
}

/* Waits (bounded) until node @node's log has a line containing all of
 * @needles (NULL-terminated). */
static bool logHas(int node, const char *const *needles)
{
    uint64_t end = monoMs() + 3000;
    for (;;) {
        FILE *fp = fopen(S->cluster.nodes[node].log_path, "r");
        char line[4096];
        while (fp != NULL && fgets(line, sizeof line, fp) != NULL) {
            bool all = true;
            for (int k = 0; needles[k] != NULL && all; k++) {
                all = strstr(line, needles[k]) != NULL;
            }
            if (all) {
                fclose(fp);
                return true;
            }
        }
        if (fp != NULL) {
            fclose(fp);
        }
        if (monoMs() >= end) {
            return false;
        }
        sleepMs(50);
    }
}

/* ------------------------------------------------------- raw sockets */

/* A blocking socket to 127.0.0.1:@p with 5 s send and receive timeouts. */
static int rawConnect(int p)
{
    struct sockaddr_in sin = { .sin_family = AF_INET,
                               .sin_port = htons((uint16_t)p) };
    struct timeval tv = { 5, 0 };
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        fail_msg("connect(127.0.0.1:%d): %s", p, strerror(errno));
    }
    return fd;
}

/* Sends all of @data; returns false when the peer closed or reset. */
static bool rawSend(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Input read so far from one raw connection. */
struct raw_in
{
    char *p;
    size_t len;
    size_t off; /* start of the first response not parsed yet */
    bool eof;
};

/* Reads more bytes (bounded by the socket's receive timeout). Returns false
 * at EOF, reset or timeout. */
static bool rawRead(int fd, struct raw_in *in)
{
    char chunk[16384];
    ssize_t n;
    char *p;

    do {
        n = recv(fd, chunk, sizeof chunk, 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        in->eof = true;
        return false;
    }
    p = realloc(in->p, in->len + (size_t)n + 1);
    assert_non_null(p);
    in->p = p;
    memcpy(in->p + in->len, chunk, (size_t)n);
    in->len += (size_t)n;
    in->p[in->len] = '\0';
    return true;
}

/* One parsed response of a raw connection. */
struct raw_resp
{
    int status;
    char head[2048]; /* status line and headers, NUL-terminated */
    char body[4096]; /* (truncated) body */
};

/* Value of header @name in @head (copied into @out), or NULL. */
static const char *rawHeader(const char *head, const char *name, char *out,
                             size_t n)
{
    size_t nl = strlen(name);
    const char *line = strchr(head, '\n');
    while (line != NULL) {
        line++;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            size_t k = 0;
            while (*v == ' ') {
                v++;
            }
            while (v[k] != '\r' && v[k] != '\n' && v[k] != '\0' &&
                   k + 1 < n) {
                k++;
            }
            memcpy(out, v, k);
            out[k] = '\0';
            return out;
        }
        line = strchr(line, '\n');
    }
    return NULL;
}

/* Parses the next complete response of @in (reading more as needed).
 * @head_only: the request was HEAD (no body). Returns false when the
 * connection ended (or timed out) before a complete response. */
static bool rawNext(int fd, struct raw_in *in, struct raw_resp *out,
                    bool head_only)
{
    for (;;) {
        const char *start = in->p != NULL ? in->p + in->off : NULL;
        const char *end = start != NULL ? strstr(start, "\r\n\r\n") : NULL;
        if (end != NULL) {
            size_t head_len = (size_t)(end - start);
            size_t body_len = 0;
            char cl[32];
            memset(out, 0, sizeof *out);
            memcpy(out->head, start,
                   head_len < sizeof out->head - 1 ? head_len
                                                   : sizeof out->head - 1);
            if (sscanf(out->head, "HTTP/1.%*d %d", &out->status) != 1) {
                fail_msg("malformed response: %.200s", out->head);
            }
            if (!head_only && out->status != 204 && out->status >= 200 &&
                rawHeader(out->head, "Content-Length", cl, sizeof cl)) {
                body_len = (size_t)strtoul(cl, NULL, 10);
            }
            if (in->len - (in->off + head_len + 4) >= body_len) {
                size_t keep = body_len < sizeof out->body - 1
                                  ? body_len
                                  : sizeof out->body - 1;
                memcpy(out->body, end + 4, keep);
                out->body[keep] = '\0';
                in->off += head_len + 4 + body_len;
                if (out->status >= 100 && out->status < 200) {
                    continue; /* 100 Continue */
                }
                return true;
            }
        }
        if (in->eof || !rawRead(fd, in)) {
            return false;
        }
    }
}

/* Reads until EOF (bounded by the receive timeout); true on a clean EOF
 * or reset, false on a timeout. */
static bool rawUntilClosed(int fd, struct raw_in *in)
{
    uint64_t end = monoMs() + 8000;
    while (monoMs() < end) {
        char chunk[4096];
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n > 0) {
            char *p = realloc(in->p, in->len + (size_t)n + 1);
            assert_non_null(p);
            in->p = p;
            memcpy(in->p + in->len, chunk, (size_t)n);
            in->len += (size_t)n;
            in->p[in->len] = '\0';
            continue;
        }
        if (n == 0 || (errno != EINTR && errno != EAGAIN &&
                       errno != EWOULDBLOCK)) {
            in->eof = true;
            return true;
        }
    }
    return false;
}

/* The node answers /healthz and its process still runs. */
static void checkAlive(int node)
{
    struct http_response r;
    json_t *j;

    if (!clusterRunning(&S->cluster, node)) {
        fail_msg("%s died: %s", nodeName(node),
                 S->cluster.nodes[node].exit_note);
    }
    j = call(node, "GET", "/healthz", NULL, NULL, 200, &r);
    assert_string_equal(jstr(j, "status"), "ok");
    json_decref(j);
    httpResponseFree(&r);
}

/* --------------------------------------------------------------- group */

/* Right after the leader is known everywhere, a follower may still fail to
 * relay (it has not applied the leader's addresses yet). Waits (bounded)
 * until every node serves a relayed read, and notes whether a node said
 * "ready" on /readyz while it could not. */
static int waitRelaying(void)
{
    uint64_t end = monoMs() + 10000;
    for (int node = 0; node < N_NODES; node++) {
        for (;;) {
            struct http_response ready;
            struct http_response get;
            int rs = httpRequestTimeout(port(node), "GET", "/readyz", NULL,
                                        NULL, 2000, &ready);
            int gs = httpRequestTimeout(port(node), "GET",
                                        "/v1/locks/setup/probe", NULL, NULL,
                                        2000, &get);
            if (rs == 200 && gs == 503 &&
                S->ready_but_not_relaying[0] == '\0') {
                snprintf(S->ready_but_not_relaying,
                         sizeof S->ready_but_not_relaying,
                         "node %d: GET /readyz 200 %.120s, then GET "
                         "/v1/locks/setup/probe 503 %.250s",
                         clusterNodeId(node), ready.body, get.body);
            }
            httpResponseFree(&ready);
            httpResponseFree(&get);
            if (gs == 200) {
                break;
            }
            if (monoMs() >= end) {
                fprintf(stderr, "node %d never served a read (%d)\n",
                        clusterNodeId(node), gs);
                return -1;
            }
            sleepMs(10);
        }
    }
    return 0;
}

static int groupSetUp(void **state)
{
    (void)state;
    S = calloc(1, sizeof *S);
    if (S == NULL) {
        return -1;
    }
    if (clusterStart(&S->cluster, N_NODES) != 0) {
        fprintf(stderr, "clusterStart: %s\n", S->cluster.errmsg);
        return -1;
    }
    S->leader = clusterWaitLeader(&S->cluster, 15000);
    if (S->leader < 0) {
        fprintf(stderr, "no leader: %s\n", S->cluster.errmsg);
        return -1;
    }
    return waitRelaying();
}

#define N_TESTS 22

static int groupTearDown(void **state)
{
    (void)state;
    if (S == NULL) {
        return 0;
    }
    if (S->passed == N_TESTS) {
        clusterPassed(&S->cluster);
    }
    clusterDestroy(&S->cluster);
    free(S);
    S = NULL;
    return 0;
}

static void passed(void)
{
    S->passed++;
}

/* --------------------------------------------------------------- tests */

/* A node that answers 200 on /readyz can serve requests: a follower that
 * knows the leader relays to it. */
static void test_ready_node_relays(void **state)
{
    (void)state;
    if (S->ready_but_not_relaying[0] != '\0') {
        fail_msg("ready but not relaying: %s", S->ready_but_not_relaying);
    }
    passed();
}

/* Acquire answers 201 with a quoted ETag equal to the token, a Location
 * naming the (re-encoded) resource and the lease, on a follower and on the
 * leader; the holder name round-trips through JSON escaping. */
static void test_acquire_created(void **state)
{
    static const char *const holder = "b\xc3\xadlling \\\"7\\\"";
    int nodes[2] = { followerNode(), leaderNode() };
    (void)state;

    for (int k = 0; k < 2; k++) {
        struct http_response r;
        char path[128];
        char body[256];
        char loc[128];
        json_t *j;
        uint64_t t;

        /* "cr/a b/é" percent-encoded in the path. */
        snprintf(path, sizeof path, "/v1/locks/cr/%d/a%%20b/%%C3%%A9", k);
        snprintf(loc, sizeof loc, "/v1/locks/cr/%d/a%%20b/%%C3%%A9", k);
        snprintf(body, sizeof body,
                 "{\"holder\":\"%s\",\"ttl_ms\":10000,\"mode\":\"exclusive\"}",
                 holder);
        j = call(nodes[k], "PUT", path, NULL, body, 201, &r);
        t = etag(&r);
        assert_string_equal(r.content_type, "application/json");
        assert_non_null(r.location);
        assert_string_equal(r.location, loc);
        assert_int_equal((uint64_t)jint(j, "token"), t);
        assert_true(jint(j, "generation") >= 1);
        assert_true(jint(j, "session") > 0);
        assert_string_equal(jstr(j, "mode"), "exclusive");
        assert_int_equal(jint(j, "ttl_ms"), 10000);
        assert_true(jint(j, "valid_for_ms") > 0);
        assert_true(jint(j, "valid_for_ms") < 10000);
        assert_string_equal(jstr(j, "holder"), "b\xc3\xadlling \"7\"");
        assert_true(json_is_false(json_object_get(j, "replayed")));
        snprintf(path, sizeof path, "cr/%d/a b/\xc3\xa9", k);
        assert_string_equal(jstr(j, "resource"), path);
        json_decref(j);
        httpResponseFree(&r);

        /* The Location leads to the lock. */
        j = call(nodes[(k + 1) % 2], "GET", loc, NULL, NULL, 200, &r);
        assert_string_equal(jstr(j, "state"), "held");
        assert_int_equal(etag(&r), t);
        json_decref(j);
        httpResponseFree(&r);
    }
    passed();
}

/* A second holder gets 409 lock-held naming the holder, mode, acquired_at,
 * expires_in_ms, queue length and request id, with Retry-After covering
 * the remaining lease and the holder's ETag; on a follower and the leader.
 * The answering node logs one line for it (resource, requester, holder,
 * wait, request id); the leader counts both in /v1/stats/contention. The
 * holder's lock is untouched. */
static void test_conflict_names_holder(void **state)
{
    int nodes[2] = { followerNode(), leaderNode() };
    uint64_t before = wallMs();
    uint64_t t = acquire(leaderNode(), "conflict/1", "owner-a", 10000);
    (void)state;

    for (int k = 0; k < 2; k++) {
        struct http_response r;
        char rid[64];
        char hdr[96];
        json_t *p;
        json_t *hs;
        const char *at;
        int64_t expires;
        long ra;

        snprintf(rid, sizeof rid, "conflict-check-%d", k);
        snprintf(hdr, sizeof hdr, "X-Request-Id: %s", rid);
        p = callProblem(nodes[k], "PUT", "/v1/locks/conflict/1", hdr,
                        "{\"holder\":\"b\",\"ttl_ms\":10000}", 409,
                        "lock-held", &r);
        /* The request id is ours, in the header and the body. */
        assert_string_equal(httpHeader(&r, "X-Request-Id"), rid);
        assert_string_equal(jstr(p, "request_id"), rid);
        assert_string_equal(jstr(p, "instance"), "/v1/locks/conflict/1");
        assert_string_equal(jstr(p, "resource"), "conflict/1");
        assert_string_equal(jstr(p, "holder"), "owner-a");
        assert_int_equal((uint64_t)jint(p, "holder_token"), t);
        assert_true(jint(p, "holder_session") > 0);
        assert_string_equal(jstr(p, "mode"), "exclusive");
        assert_int_equal(jint(p, "queue_len"), 0);
        /* acquired_at: RFC 3339 UTC with milliseconds, and its _ms twin
         * within a generous minute of our clock. */
        at = jstr(p, "acquired_at");
        assert_int_equal(strlen(at), 24);
        assert_true(at[4] == '-' && at[10] == 'T' && at[19] == '.' &&
                    at[23] == 'Z');
        assert_true((uint64_t)jint(p, "acquired_at_ms") + 60000 > before);
        assert_true((uint64_t)jint(p, "acquired_at_ms") < wallMs() + 60000);
        expires = jint(p, "expires_in_ms");
        assert_true(expires > 0 && expires <= 10000);
        hs = json_object_get(p, "holders");
        assert_int_equal(json_array_size(hs), 1);
        assert_string_equal(jstr(json_array_get(hs, 0), "holder"), "owner-a");
        /* Retry-After: whole seconds, at least what is left of the lease,
         * at most the lease plus the documented jitter (10 % + 0.5 s). */
        assert_non_null(r.retry_after);
        ra = strtol(r.retry_after, NULL, 10);
        assert_true(ra >= 1 && ra <= 12);
        assert_true(ra * 1000 >= expires);
        assert_true(jint(p, "retry_after_ms") >= expires);
        /* The holder's ETag, so a client can watch that lock. */
        assert_int_equal(etag(&r), t);
        json_decref(p);
        httpResponseFree(&r);
        /* One log line for the conflict on the node that answered it. */
        {
            char rq[96];
            const char *needles[] = { "event=conflict", "kind=lock-held",
                                      "resource=\"conflict/1\"",
                                      "requester=\"b\"",
                                      "holder=\"owner-a\"", rq, NULL };
            snprintf(rq, sizeof rq, "request_id=%s", rid);
            if (!logHas(nodes[k], needles)) {
                fail_msg("no conflict log line for %s on %s", rid,
                         nodeName(nodes[k]));
            }
        }
    }
    assert_int_equal(heldToken(followerNode(), "conflict/1", "owner-a"), t);

    /* The leader, which answered both (one relayed), counts them in its
     * contention statistics. */
    {
        struct http_response r;
        json_t *j = call(leaderNode(), "GET", "/v1/stats/contention?top=5",
                         NULL, NULL, 200, &r);
        json_t *rs = json_object_get(j, "resources");
        bool seen = false;
        for (size_t i = 0; i < json_array_size(rs); i++) {
            json_t *e = json_array_get(rs, i);
            if (strcmp(jstr(e, "resource"), "conflict/1") == 0) {
                seen = jint(e, "conflicts") >= 2;
            }
        }
        if (!seen) {
            fail_msg("conflict/1 not counted: %s", r.body);
        }
        json_decref(j);
        httpResponseFree(&r);
        j = callProblem(followerNode(), "GET", "/v1/stats/contention?top=0",
                        NULL, NULL, 422, "invalid-value", &r);
        json_decref(j);
        httpResponseFree(&r);
    }
    release(followerNode(), "conflict/1", t);
    passed();
}

/* Thread of test_conflict_counts_queue: one blocking acquire. */
struct waiter
{
    pthread_t thread;
    int port;
    const char *path;
    const char *body;
    int status;
    uint64_t token;
    char holder[64];
    char error[256];
};

static void *waiterMain(void *arg)
{
    struct waiter *w = arg;
    struct http_response r;
    w->status = httpRequestTimeout(w->port, "PUT", w->path, NULL, w->body,
                                   20000, &r);
    if (w->status < 0) {
        snprintf(w->error, sizeof w->error, "%s", r.error);
    } else {
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        httpETagToken(&r, &w->token);
        if (j != NULL && json_is_string(json_object_get(j, "holder"))) {
            snprintf(w->holder, sizeof w->holder, "%s",
                     json_string_value(json_object_get(j, "holder")));
        }
        json_decref(j);
        snprintf(w->error, sizeof w->error, "%.200s",
                 r.body != NULL ? r.body : "");
    }
    httpResponseFree(&r);
    return NULL;
}

/* A waiting acquire (wait_ms) queues in the server's FIFO: the 409 of a
 * third client counts it in queue_len, and it gets the lock (201) when the
 * holder releases. A wait that runs out answers 409 too. */
static void test_conflict_counts_queue(void **state)
{
    struct waiter w;
    struct http_response r;
    uint64_t t = acquire(leaderNode(), "queue/1", "first", 10000);
    uint64_t end;
    json_t *j;
    (void)state;

    memset(&w, 0, sizeof w);
    w.port = port(followerNode());
    w.path = "/v1/locks/queue/1";
    w.body = "{\"holder\":\"waiter\",\"ttl_ms\":10000,\"wait_ms\":15000}";
    assert_int_equal(pthread_create(&w.thread, NULL, waiterMain, &w), 0);

    /* The waiter shows up in the queue. */
    end = monoMs() + 5000;
    for (;;) {
        int64_t q;
        j = lockState(leaderNode(), "queue/1", NULL, &r);
        q = jint(j, "queue_len");
        json_decref(j);
        httpResponseFree(&r);
        if (q == 1) {
            break;
        }
        if (monoMs() >= end) {
            pthread_join(w.thread, NULL);
            fail_msg("the waiter never appeared in the queue (%d: %s)",
                     w.status, w.error);
        }
        sleepMs(20);
    }
    j = callProblem(followerNode(), "PUT", "/v1/locks/queue/1", NULL,
                    "{\"holder\":\"third\"}", 409, "lock-held", &r);
    assert_int_equal(jint(j, "queue_len"), 1);
    assert_string_equal(jstr(j, "holder"), "first");
    json_decref(j);
    httpResponseFree(&r);

    /* A wait that runs out is a 409 as well (bounded: 300 ms). */
    j = callProblem(leaderNode(), "PUT", "/v1/locks/queue/1", NULL,
                    "{\"holder\":\"impatient\",\"wait_ms\":300}", 409,
                    "lock-held", &r);
    assert_string_equal(jstr(j, "holder"), "first");
    json_decref(j);
    httpResponseFree(&r);

    release(leaderNode(), "queue/1", t);
    pthread_join(w.thread, NULL);
    if (w.status != 201) {
        fail_msg("the waiter got %d: %s", w.status, w.error);
    }
    assert_string_equal(w.holder, "waiter");
    assert_true(w.token > t);
    assert_int_equal(heldToken(followerNode(), "queue/1", "waiter"), w.token);
    release(followerNode(), "queue/1", w.token);
    passed();
}

/* Idempotency-Key: a replay (through another node) answers 200 with the
 * same ETag and Idempotent-Replayed: true; the same key on another
 * resource is a new operation. Re-acquiring in the same session answers
 * 200 with the same token. Sessions: open 201, keepalive 200, close 204
 * (its locks freed), then 410. */
static void test_idempotent_replay(void **state)
{
    static const char *const hk = "Idempotency-Key: 7d1c1a52-replay";
    struct http_response r;
    char path[64];
    char body[128];
    uint64_t t;
    uint64_t sid;
    json_t *j;
    (void)state;

    j = call(followerNode(), "PUT", "/v1/locks/idem/1", hk,
             "{\"holder\":\"k\",\"ttl_ms\":10000}", 201, &r);
    t = etag(&r);
    assert_null(httpHeader(&r, "Idempotent-Replayed"));
    json_decref(j);
    httpResponseFree(&r);
    for (int k = 0; k < 2; k++) {
        int node = k == 0 ? leaderNode() : followerNode();
        j = call(node, "PUT", "/v1/locks/idem/1", hk,
                 "{\"holder\":\"k\",\"ttl_ms\":10000}", 200, &r);
        assert_int_equal(etag(&r), t);
        assert_non_null(httpHeader(&r, "Idempotent-Replayed"));
        assert_string_equal(httpHeader(&r, "Idempotent-Replayed"), "true");
        assert_true(json_is_true(json_object_get(j, "replayed")));
        assert_int_equal((uint64_t)jint(j, "token"), t);
        json_decref(j);
        httpResponseFree(&r);
    }
    /* The same key for another resource is not a replay. */
    j = call(leaderNode(), "PUT", "/v1/locks/idem/2", hk,
             "{\"holder\":\"k\",\"ttl_ms\":10000}", 201, &r);
    assert_true(etag(&r) != t);
    json_decref(j);
    httpResponseFree(&r);
    assert_int_equal(heldToken(leaderNode(), "idem/1", "k"), t);

    /* Sessions: the same session re-acquiring gets its token back. */
    j = call(followerNode(), "POST", "/v1/sessions", NULL,
             "{\"holder\":\"sess-holder\",\"ttl_ms\":10000}", 201, &r);
    sid = (uint64_t)jint(j, "session");
    assert_true(sid > 0);
    assert_int_equal(jint(j, "ttl_ms"), 10000);
    assert_string_equal(jstr(j, "holder"), "sess-holder");
    snprintf(path, sizeof path, "/v1/sessions/%" PRIu64, sid);
    assert_string_equal(r.location, path);
    json_decref(j);
    httpResponseFree(&r);

    snprintf(body, sizeof body, "{\"session\":%" PRIu64 "}", sid);
    j = call(followerNode(), "PUT", "/v1/locks/idem/s", NULL, body, 201, &r);
    t = etag(&r);
    assert_int_equal((uint64_t)jint(j, "session"), sid);
    json_decref(j);
    httpResponseFree(&r);
    j = call(leaderNode(), "PUT", "/v1/locks/idem/s", NULL, body, 200, &r);
    assert_int_equal(etag(&r), t);
    assert_true(json_is_true(json_object_get(j, "replayed")));
    json_decref(j);
    httpResponseFree(&r);
    assert_int_equal(heldToken(followerNode(), "idem/s", "sess-holder"), t);

    j = call(followerNode(), "PUT", path, NULL, NULL, 200, &r);
    assert_int_equal((uint64_t)jint(j, "session"), sid);
    json_decref(j);
    httpResponseFree(&r);
    j = call(leaderNode(), "DELETE", path, NULL, NULL, 204, &r);
    assert_null(j);
    httpResponseFree(&r);
    assert_int_equal(heldToken(followerNode(), "idem/s", NULL), 0);
    j = callProblem(followerNode(), "PUT", path, NULL, NULL, 410,
                    "session-expired", &r);
    json_decref(j);
    httpResponseFree(&r);
    j = callProblem(followerNode(), "PUT", "/v1/locks/idem/s2", NULL, body,
                    410, "session-expired", &r);
    json_decref(j);
    httpResponseFree(&r);
    passed();
}

/* Renew with If-Match answers 200 with the same ETag and the new TTL;
 * release answers 204, and 204 again when retried; with an Idempotency-Key
 * the retries of both say Idempotent-Replayed; without If-Match 428; a
 * malformed If-Match 400. */
static void test_renew_release(void **state)
{
    struct http_response r;
    char h[64];
    uint64_t t = acquire(followerNode(), "renew/1", "r", 5000);
    json_t *j;
    (void)state;

    ifMatch(h, sizeof h, t);
    for (int k = 0; k < 2; k++) {
        int node = k == 0 ? followerNode() : leaderNode();
        j = call(node, "PUT", "/v1/locks/renew/1", h, "{\"ttl_ms\":20000}",
                 200, &r);
        assert_int_equal(etag(&r), t);
        assert_int_equal((uint64_t)jint(j, "token"), t);
        assert_int_equal(jint(j, "ttl_ms"), 20000);
        assert_true(jint(j, "valid_for_ms") > 5000);
        json_decref(j);
        httpResponseFree(&r);
    }
    /* The lease now runs for longer than the original 5 s. */
    j = lockState(leaderNode(), "renew/1", NULL, &r);
    assert_true(jint(json_array_get(json_object_get(j, "holders"), 0),
                     "expires_in_ms") > 5000);
    json_decref(j);
    httpResponseFree(&r);
    /* A body-less renew keeps the TTL. */
    j = call(leaderNode(), "PUT", "/v1/locks/renew/1", h, NULL, 200, &r);
    assert_int_equal(etag(&r), t);
    json_decref(j);
    httpResponseFree(&r);
    /* Renew takes only ttl_ms. */
    j = callProblem(leaderNode(), "PUT", "/v1/locks/renew/1", h,
                    "{\"holder\":\"r\"}", 400, "invalid-request", &r);
    assert_string_equal(jstr(j, "field"), "holder");
    json_decref(j);
    httpResponseFree(&r);

    /* Without If-Match, and with malformed ones. */
    j = callProblem(followerNode(), "DELETE", "/v1/locks/renew/1", NULL, NULL,
                    428, "precondition-required", &r);
    json_decref(j);
    httpResponseFree(&r);
    {
        static const char *const bad[] = { "If-Match: *", "If-Match: W/\"1\"",
                                           "If-Match: \"abc\"",
                                           "If-Match: \"1\", \"2\"" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            j = callProblem(followerNode(), "DELETE", "/v1/locks/renew/1",
                            bad[i], NULL, 400, "invalid-request", &r);
            assert_string_equal(jstr(j, "field"), "If-Match");
            json_decref(j);
            httpResponseFree(&r);
        }
    }
    assert_int_equal(heldToken(leaderNode(), "renew/1", "r"), t);

    /* Renew with an Idempotency-Key, replayed through another node. */
    {
        char hk[128];
        snprintf(hk, sizeof hk, "%s\r\nIdempotency-Key: renew-1-key", h);
        j = call(followerNode(), "PUT", "/v1/locks/renew/1", hk, NULL, 200,
                 &r);
        assert_null(httpHeader(&r, "Idempotent-Replayed"));
        json_decref(j);
        httpResponseFree(&r);
        j = call(leaderNode(), "PUT", "/v1/locks/renew/1", hk, NULL, 200, &r);
        assert_int_equal(etag(&r), t);
        assert_string_equal(httpHeader(&r, "Idempotent-Replayed"), "true");
        json_decref(j);
        httpResponseFree(&r);

        /* Release, then the retried release: with a key the retry says it
         * is a replay; without one it is a plain 204 too. */
        snprintf(hk, sizeof hk, "%s\r\nIdempotency-Key: release-1-key", h);
        j = call(followerNode(), "DELETE", "/v1/locks/renew/1", hk, NULL, 204,
                 &r);
        assert_null(httpHeader(&r, "Idempotent-Replayed"));
        httpResponseFree(&r);
        j = call(leaderNode(), "DELETE", "/v1/locks/renew/1", hk, NULL, 204,
                 &r);
        assert_string_equal(httpHeader(&r, "Idempotent-Replayed"), "true");
        httpResponseFree(&r);
    }
    release(leaderNode(), "renew/1", t);
    assert_int_equal(heldToken(followerNode(), "renew/1", NULL), 0);
    passed();
}

/* Renew or release with a token that is not the current holder's answers
 * 412 token-mismatch with the current holder's ETag, and the newer lock is
 * untouched. A retried release of one's own released token after someone
 * newer took the lock is a 204 that does not touch the newer lock either. */
static void test_stale_token(void **state)
{
    struct http_response r;
    char h[64];
    uint64_t ta = acquire(leaderNode(), "stale/1", "a", 10000);
    uint64_t tother = acquire(leaderNode(), "stale/other", "o", 10000);
    uint64_t stale[2] = { tother, ta + 1 };
    json_t *j;
    (void)state;

    for (int k = 0; k < 2; k++) {
        int node = k == 0 ? followerNode() : leaderNode();
        ifMatch(h, sizeof h, stale[k]);
        j = callProblem(node, "PUT", "/v1/locks/stale/1", h, NULL, 412,
                        "token-mismatch", &r);
        assert_int_equal(etag(&r), ta);
        assert_string_equal(jstr(j, "holder"), "a");
        assert_int_equal((uint64_t)jint(j, "holder_token"), ta);
        json_decref(j);
        httpResponseFree(&r);
        j = callProblem(node, "DELETE", "/v1/locks/stale/1", h, NULL, 412,
                        "token-mismatch", &r);
        assert_int_equal(etag(&r), ta);
        json_decref(j);
        httpResponseFree(&r);
    }
    assert_int_equal(heldToken(followerNode(), "stale/1", "a"), ta);
    {
        /* Not shortened either: the lease still has most of its 10 s. */
        j = lockState(leaderNode(), "stale/1", NULL, &r);
        assert_true(jint(json_array_get(json_object_get(j, "holders"), 0),
                         "expires_in_ms") > 5000);
        json_decref(j);
        httpResponseFree(&r);
    }

    /* a releases; b takes it; a's retried release is answered as the
     * retry it is (204) and b keeps the lock. a's renew is 410: the lease
     * behind its token is over. */
    release(leaderNode(), "stale/1", ta);
    {
        uint64_t tb = acquire(followerNode(), "stale/1", "b", 10000);
        assert_true(tb > ta);
        release(followerNode(), "stale/1", ta);
        assert_int_equal(heldToken(leaderNode(), "stale/1", "b"), tb);
        ifMatch(h, sizeof h, ta);
        j = callProblem(followerNode(), "PUT", "/v1/locks/stale/1", h, NULL,
                        410, "lease-expired", &r);
        json_decref(j);
        httpResponseFree(&r);
        assert_int_equal(heldToken(followerNode(), "stale/1", "b"), tb);
        release(leaderNode(), "stale/1", tb);
    }
    release(followerNode(), "stale/other", tother);
    passed();
}

/* After a lease ran out (ttl_ms 1000, the server's minimum): renew and
 * release answer 410 lease-expired, the write gate 412 token-stale; a lock
 * freed by expiry with lock_delay_ms is in "lock-delay" (409 lock-delay for
 * an acquire, with lock_delay_until and Retry-After); an old token whose
 * lock someone newer holds gets 410 and leaves the newer lock alone. */
static void test_expired_lease(void **state)
{
    struct http_response r;
    char h[64];
    char path[96];
    uint64_t td;
    uint64_t tx;
    uint64_t tb;
    json_t *j;
    (void)state;

    j = call(followerNode(), "PUT", "/v1/locks/exp/delay", NULL,
             "{\"holder\":\"x\",\"ttl_ms\":1000,\"lock_delay_ms\":4000}", 201,
             &r);
    td = etag(&r);
    json_decref(j);
    httpResponseFree(&r);
    tx = acquire(leaderNode(), "exp/plain", "x", 1000);

    /* Expiry is decided by the leader; allow for generous slack. */
    if (!waitState(leaderNode(), "exp/delay", "lock-delay", 6000)) {
        fail_msg("exp/delay did not expire into lock-delay");
    }
    if (!waitState(leaderNode(), "exp/plain", "free", 6000)) {
        fail_msg("exp/plain did not expire");
    }

    for (int k = 0; k < 2; k++) {
        int node = k == 0 ? followerNode() : leaderNode();
        ifMatch(h, sizeof h, tx);
        j = callProblem(node, "PUT", "/v1/locks/exp/plain", h, NULL, 410,
                        "lease-expired", &r);
        assert_int_equal((uint64_t)jint(j, "token"), tx);
        json_decref(j);
        httpResponseFree(&r);
        j = callProblem(node, "DELETE", "/v1/locks/exp/plain", h, NULL, 410,
                        "lease-expired", &r);
        json_decref(j);
        httpResponseFree(&r);
        snprintf(path, sizeof path, "/v1/fence/exp/plain?token=%" PRIu64, tx);
        j = callProblem(node, "GET", path, NULL, NULL, 412, "token-stale",
                        &r);
        json_decref(j);
        httpResponseFree(&r);
    }

    /* Lock-delay: visible in the state and refused to others with 409. */
    j = lockState(followerNode(), "exp/delay", NULL, &r);
    assert_string_equal(jstr(j, "state"), "lock-delay");
    assert_true(json_is_string(json_object_get(j, "lock_delay_until")));
    json_decref(j);
    httpResponseFree(&r);
    j = callProblem(followerNode(), "PUT", "/v1/locks/exp/delay", NULL,
                    "{\"holder\":\"y\",\"ttl_ms\":5000}", 409, "lock-delay",
                    &r);
    assert_true(json_is_string(json_object_get(j, "lock_delay_until")));
    assert_true(jint(j, "lock_delay_until_ms") > 0);
    assert_non_null(r.retry_after);
    assert_true(strtol(r.retry_after, NULL, 10) >= 1 &&
                strtol(r.retry_after, NULL, 10) <= 6);
    json_decref(j);
    httpResponseFree(&r);
    ifMatch(h, sizeof h, td);
    j = callProblem(leaderNode(), "PUT", "/v1/locks/exp/delay", h, NULL, 410,
                    "lease-expired", &r);
    json_decref(j);
    httpResponseFree(&r);

    /* Someone newer holds exp/plain: the expired token still gets 410 (the
     * server remembers how that lease ended) and b's lock is untouched. */
    tb = acquire(followerNode(), "exp/plain", "b", 10000);
    ifMatch(h, sizeof h, tx);
    j = callProblem(leaderNode(), "DELETE", "/v1/locks/exp/plain", h, NULL,
                    410, "lease-expired", &r);
    json_decref(j);
    httpResponseFree(&r);
    assert_int_equal(heldToken(followerNode(), "exp/plain", "b"), tb);
    release(leaderNode(), "exp/plain", tb);
    passed();
}

/* Malformed input is 400 naming the field; well-formed but out of range
 * is 422 with the allowed range; the connection and the daemon survive. */
static void test_bad_input(void **state)
{
    static const struct
    {
        const char *body;
        int status;
        const char *field;
    } cases[] = {
        { "{\"holder\":\"a\",", 400, "body" },
        { "[1,2]", 400, "body" },
        { "{\"holder\":\"a\",\"colour\":\"red\"}", 400, "colour" },
        { "{\"holder\":\"a\",\"holder\":\"b\"}", 400, "body" },
        { "{\"holder\":7}", 400, "holder" },
        { "{\"holder\":\"a\",\"ttl_ms\":\"10s\"}", 400, "ttl_ms" },
        { "{\"holder\":\"a\",\"ttl_ms\":1.5}", 400, "ttl_ms" },
        { "{\"holder\":\"a\\u0001b\"}", 400, "holder" },
        { "{\"ttl_ms\":1000}", 400, "holder" },
        { "{\"holder\":\"a\",\"ttl_ms\":0}", 422, "ttl_ms" },
        { "{\"holder\":\"a\",\"ttl_ms\":-1}", 422, "ttl_ms" },
        { "{\"holder\":\"a\",\"ttl_ms\":4294967296}", 422, "ttl_ms" },
        { "{\"holder\":\"a\",\"wait_ms\":-1}", 422, "wait_ms" },
        { "{\"holder\":\"a\",\"mode\":\"bogus\"}", 422, "mode" },
        { "{\"holder\":\"a\",\"mode\":\"semaphore\"}", 422, "permits" },
        { "{\"holder\":\"a\",\"permits\":2}", 422, "permits" },
        { "{\"holder\":\"a\",\"mode\":\"semaphore\",\"permits\":0}", 422,
          "permits" },
        { "{\"holder\":\"\"}", 422, "holder" },
    };
    struct http_response r;
    char id513[600];
    char id512[600];
    json_t *j;
    (void)state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int node = i % 2 == 0 ? followerNode() : leaderNode();
        j = callProblem(node, "PUT", "/v1/locks/bad/1", NULL, cases[i].body,
                        cases[i].status,
                        cases[i].status == 400 ? "invalid-request"
                                               : "invalid-value",
                        &r);
        if (!json_is_string(json_object_get(j, "field")) ||
            strcmp(jstr(j, "field"), cases[i].field) != 0) {
            fail_msg("body %s: field should be %s: %s", cases[i].body,
                     cases[i].field, r.body);
        }
        if (cases[i].status == 422 && strcmp(cases[i].field, "holder") != 0) {
            assert_true(json_is_string(json_object_get(j, "allowed")));
        }
        json_decref(j);
        httpResponseFree(&r);
    }

    /* Resource ids: empty, too long, control characters (C0, DEL, C1),
     * not UTF-8, bad escapes. */
    memset(id513, 'x', 513);
    id513[513] = '\0';
    memcpy(id512, id513, 512);
    id512[512] = '\0';
    {
        char path[700];
        const char *ids[] = { "",        id513,     "a%01b",   "a%7Fb",
                              "a%C2%80", "a%FFb",   "%C3",     "a%zz",
                              "a%00b",   "%ED%A0%80" };
        for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
            snprintf(path, sizeof path, "/v1/locks/%s", ids[i]);
            j = callProblem(i % 2 ? followerNode() : leaderNode(), "PUT",
                            path, NULL, "{\"holder\":\"a\"}", 400,
                            "invalid-request", &r);
            assert_string_equal(jstr(j, "field"), "resource");
            json_decref(j);
            httpResponseFree(&r);
            j = callProblem(followerNode(), "GET", path, NULL, NULL, 400,
                            "invalid-request", &r);
            json_decref(j);
            httpResponseFree(&r);
        }
        /* 512 bytes is fine. */
        release(leaderNode(), id512,
                acquire(followerNode(), id512, "long", 5000));
    }

    /* Query parameters are checked as well. */
    j = callProblem(followerNode(), "GET", "/v1/locks/bad/1?colour=red", NULL,
                    NULL, 400, "invalid-request", &r);
    json_decref(j);
    httpResponseFree(&r);
    j = callProblem(followerNode(), "GET", "/v1/locks/bad/1?consistency=weak",
                    NULL, NULL, 400, "invalid-request", &r);
    assert_string_equal(jstr(j, "field"), "consistency");
    json_decref(j);
    httpResponseFree(&r);
    j = callProblem(followerNode(), "GET", "/v1/locks/bad/1?index=1&wait=11m",
                    NULL, NULL, 422, "invalid-value", &r);
    assert_string_equal(jstr(j, "field"), "wait");
    json_decref(j);
    httpResponseFree(&r);
    j = callProblem(leaderNode(), "GET", "/v1/locks?limit=0", NULL, NULL, 422,
                    "invalid-value", &r);
    assert_string_equal(jstr(j, "field"), "limit");
    json_decref(j);
    httpResponseFree(&r);
    j = callProblem(leaderNode(), "PUT", "/v1/locks/bad/1",
                    "Idempotency-Key: bad\x01key", "{\"holder\":\"a\"}", 400,
                    "invalid-request", &r);
    json_decref(j);
    httpResponseFree(&r);

    /* Nothing was taken by any of it. */
    assert_int_equal(heldToken(leaderNode(), "bad/1", NULL), 0);
    checkAlive(followerNode());
    checkAlive(leaderNode());
    passed();
}

/* Unknown paths are 404; wrong methods 405 with Allow; OPTIONS 204 with
 * Allow; HEAD answers the GET's headers without a body. */
static void test_routing(void **state)
{
    static const struct
    {
        const char *method;
        const char *path;
        const char *allow_has;
    } wrong[] = {
        { "POST", "/v1/locks/route/1", "PUT" },
        { "PATCH", "/v1/locks/route/1", "DELETE" },
        { "DELETE", "/v1/cluster", "GET" },
        { "PUT", "/v1/locks", "GET" },
        { "GET", "/v1/sessions", "POST" },
        { "POST", "/healthz", "GET" },
        { "DELETE", "/v1/fence/route/1?token=1", "GET" },
        { "POST", "/metrics", "GET" },
    };
    static const char *const missing[] = { "/v2/locks/x", "/v1/lock/x",
                                           "/v1", "/favicon.ico",
                                           "/v1/clusterx" };
    struct http_response r;
    json_t *j;
    (void)state;

    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        j = callProblem(i % 2 ? leaderNode() : followerNode(), "GET",
                        missing[i], NULL, NULL, 404, "not-found", &r);
        assert_string_equal(jstr(j, "instance"), missing[i]);
        json_decref(j);
        httpResponseFree(&r);
    }
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        const char *allow;
        j = callProblem(i % 2 ? leaderNode() : followerNode(),
                        wrong[i].method, wrong[i].path, NULL, NULL, 405,
                        "method-not-allowed", &r);
        allow = httpHeader(&r, "Allow");
        if (allow == NULL || strstr(allow, wrong[i].allow_has) == NULL ||
            strstr(allow, wrong[i].method) != NULL) {
            fail_msg("%s %s: Allow is %s", wrong[i].method, wrong[i].path,
                     allow != NULL ? allow : "absent");
        }
        json_decref(j);
        httpResponseFree(&r);
    }
    j = call(followerNode(), "OPTIONS", "/v1/locks/route/1", NULL, NULL, 204,
             &r);
    assert_non_null(httpHeader(&r, "Allow"));
    assert_non_null(strstr(httpHeader(&r, "Allow"), "DELETE"));
    json_decref(j);
    httpResponseFree(&r);
    j = call(followerNode(), "HEAD", "/v1/cluster", NULL, NULL, 200, &r);
    assert_int_equal(r.body_len, 0);
    assert_string_equal(r.content_type, "application/json");
    httpResponseFree(&r);
    passed();
}

/* Bodies over 64 KiB answer 413, request heads over 8 KiB 431 (and a
 * request target alone over it 414); the connection closes after the
 * answer and the daemon serves the next request. */
static void test_size_limits(void **state)
{
    struct http_response r;
    size_t big = 70 * 1024;
    char *body = malloc(big + 1);
    char *hdr = malloc(9000 + 32);
    char *path = malloc(9000 + 32);
    json_t *j;
    (void)state;

    assert_non_null(body);
    assert_non_null(hdr);
    assert_non_null(path);
    /* A well-formed JSON object of 70 KiB. */
    memset(body, ' ', big);
    memcpy(body, "{\"holder\":\"", 11);
    memset(body + 11, 'h', big - 20);
    memcpy(body + big - 9, "\"}", 2);
    body[big] = '\0';
    j = callProblem(followerNode(), "PUT", "/v1/locks/size/1", NULL, body,
                    413, "body-too-large", &r);
    json_decref(j);
    httpResponseFree(&r);

    snprintf(hdr, 32, "X-Padding: ");
    memset(hdr + 11, 'p', 9000);
    hdr[11 + 9000] = '\0';
    j = callProblem(leaderNode(), "GET", "/v1/locks/size/1", hdr, NULL, 431,
                    "headers-too-large", &r);
    json_decref(j);
    httpResponseFree(&r);

    snprintf(path, 32, "/v1/locks/");
    memset(path + 10, 'u', 9000);
    path[10 + 9000] = '\0';
    j = callProblem(followerNode(), "GET", path, NULL, NULL, 414,
                    "uri-too-long", &r);
    json_decref(j);
    httpResponseFree(&r);

    /* A body just under the limit is read (and judged on its content). */
    memset(body, ' ', 60 * 1024);
    memcpy(body, "{\"holder\":\"fits\"}", 17);
    body[60 * 1024] = '\0';
    j = call(followerNode(), "PUT", "/v1/locks/size/1", NULL, body, 201, &r);
    release(leaderNode(), "size/1", etag(&r));
    json_decref(j);
    httpResponseFree(&r);
    free(body);
    free(hdr);
    free(path);
    checkAlive(followerNode());
    checkAlive(leaderNode());
    passed();
}

/* GET state: a never-locked resource is free (200, no ETag), a held one
 * names its holders with an ETag and the Raft index; stale reads from a
 * follower work; list by prefix returns exactly the held locks under it. */
static void test_state_and_list(void **state)
{
    struct http_response r;
    uint64_t t[3];
    json_t *j;
    json_t *locks;
    (void)state;

    for (int k = 0; k < 2; k++) {
        int node = k == 0 ? followerNode() : leaderNode();
        j = call(node, "GET", "/v1/locks/state/never", NULL, NULL, 200, &r);
        assert_string_equal(jstr(j, "state"), "free");
        assert_true(json_is_null(json_object_get(j, "token")));
        assert_int_equal(json_array_size(json_object_get(j, "holders")), 0);
        assert_null(r.etag);
        assert_non_null(httpHeader(&r, "X-Tenure-Index"));
        json_decref(j);
        httpResponseFree(&r);
    }

    t[0] = acquire(leaderNode(), "list/a", "la", 10000);
    t[1] = acquire(followerNode(), "list/b/c", "lb", 10000);
    t[2] = acquire(leaderNode(), "listx", "lx", 10000);
    for (int k = 0; k < 3; k++) {
        int node = k % N_NODES;
        const char *q = k == 2 ? "consistency=stale" : NULL;
        json_t *h0;
        if (k == 2) {
            /* A stale read may lag; wait (bounded) for the replica. */
            uint64_t end = monoMs() + 5000;
            for (;;) {
                j = lockState(node, "list/b/c", q, &r);
                if (strcmp(jstr(j, "state"), "held") == 0 ||
                    monoMs() >= end) {
                    break;
                }
                json_decref(j);
                httpResponseFree(&r);
                sleepMs(20);
            }
        } else {
            j = lockState(node, "list/b/c", q, &r);
        }
        assert_string_equal(jstr(j, "state"), "held");
        assert_string_equal(jstr(j, "mode"), "exclusive");
        assert_int_equal(etag(&r), t[1]);
        assert_int_equal((uint64_t)jint(j, "token"), t[1]);
        assert_true(jint(j, "index") > 0);
        assert_int_equal(jint(j, "queue_len"), 0);
        h0 = json_array_get(json_object_get(j, "holders"), 0);
        assert_string_equal(jstr(h0, "holder"), "lb");
        assert_int_equal((uint64_t)jint(h0, "token"), t[1]);
        assert_int_equal(jint(h0, "ttl_ms"), 10000);
        if (q == NULL) {
            /* Linearizable reads come from the leader, which knows the
             * deadline. */
            assert_true(jint(h0, "expires_in_ms") > 0);
        }
        json_decref(j);
        httpResponseFree(&r);
    }

    for (int k = 0; k < 2; k++) {
        int node = k == 0 ? followerNode() : leaderNode();
        bool seen_a = false;
        bool seen_b = false;
        j = call(node, "GET", "/v1/locks?prefix=list/", NULL, NULL, 200, &r);
        locks = json_object_get(j, "locks");
        assert_int_equal(jint(j, "count"), 2);
        assert_int_equal(json_array_size(locks), 2);
        for (size_t i = 0; i < 2; i++) {
            json_t *l = json_array_get(locks, i);
            const char *res = jstr(l, "resource");
            assert_string_equal(jstr(l, "state"), "held");
            if (strcmp(res, "list/a") == 0) {
                seen_a = (uint64_t)jint(l, "token") == t[0];
            } else if (strcmp(res, "list/b/c") == 0) {
                seen_b = (uint64_t)jint(l, "token") == t[1];
            }
        }
        assert_true(seen_a && seen_b);
        json_decref(j);
        httpResponseFree(&r);
    }
    /* Percent-encoded prefix and limit. */
    j = call(followerNode(), "GET", "/v1/locks?prefix=list%2Fb&limit=10", NULL,
             NULL, 200, &r);
    assert_int_equal(jint(j, "count"), 1);
    json_decref(j);
    httpResponseFree(&r);
    j = call(leaderNode(), "GET", "/v1/locks?prefix=nothing-here/", NULL, NULL,
             200, &r);
    assert_int_equal(jint(j, "count"), 0);
    json_decref(j);
    httpResponseFree(&r);

    release(leaderNode(), "list/a", t[0]);
    release(followerNode(), "list/b/c", t[1]);
    release(leaderNode(), "listx", t[2]);
    j = call(followerNode(), "GET", "/v1/locks?prefix=list", NULL, NULL, 200,
             &r);
    assert_int_equal(jint(j, "count"), 0);
    json_decref(j);
    httpResponseFree(&r);
    passed();
}

/* Thread of test_long_poll: releases a lock after a short delay. */
struct delayed_release
{
    pthread_t thread;
    int port;
    uint64_t token;
    int status;
};

static void *delayedReleaseMain(void *arg)
{
    struct delayed_release *d = arg;
    struct http_response r;
    char h[64];
    sleepMs(300);
    snprintf(h, sizeof h, "If-Match: \"%" PRIu64 "\"", d->token);
    d->status = httpRequestTimeout(d->port, "DELETE", "/v1/locks/poll/1", h,
                                   NULL, REQ_TIMEOUT_MS, &r);
    httpResponseFree(&r);
    return NULL;
}

/* A long-poll (index, wait) on a follower returns when the lock changes,
 * well before its wait ends, with a larger index. */
static void test_long_poll(void **state)
{
    struct delayed_release d;
    struct http_response r;
    char q[96];
    uint64_t t = acquire(leaderNode(), "poll/1", "p", 10000);
    int64_t index;
    uint64_t start;
    json_t *j;
    (void)state;

    j = lockState(followerNode(), "poll/1", NULL, &r);
    index = jint(j, "index");
    json_decref(j);
    httpResponseFree(&r);

    memset(&d, 0, sizeof d);
    d.port = port(leaderNode());
    d.token = t;
    assert_int_equal(pthread_create(&d.thread, NULL, delayedReleaseMain, &d),
                     0);
    snprintf(q, sizeof q, "index=%" PRId64 "&wait=8s", index);
    start = monoMs();
    j = lockState(followerNode(), "poll/1", q, &r);
    pthread_join(d.thread, NULL);
    assert_int_equal(d.status, 204);
    assert_string_equal(jstr(j, "state"), "free");
    assert_true(jint(j, "index") > index);
    /* Woken by the change (at ~0.3 s), not by the 8 s wait. */
    assert_true(monoMs() - start < 6000);
    json_decref(j);
    httpResponseFree(&r);
    passed();
}

/* /v1/cluster on every node lists the 3 members with roles and addresses,
 * one leader agreed by all, term and commit index; /healthz and /readyz
 * answer 200 everywhere. */
static void test_cluster_health(void **state)
{
    (void)state;
    for (int node = 0; node < N_NODES; node++) {
        struct http_response r;
        json_t *j = call(node, "GET", "/v1/cluster", NULL, NULL, 200, &r);
        json_t *ms = json_object_get(j, "members");
        int leaders = 0;
        char addr[32];

        assert_int_equal(jint(j, "node_id"), clusterNodeId(node));
        assert_string_equal(jstr(j, "state"),
                            node == leaderNode() ? "leader" : "follower");
        assert_int_equal(jint(j, "leader_id"), clusterNodeId(leaderNode()));
        snprintf(addr, sizeof addr, "127.0.0.1:%d", port(leaderNode()));
        assert_string_equal(jstr(j, "leader_http"), addr);
        snprintf(addr, sizeof addr, "127.0.0.1:%d",
                 clusterRpcPort(&S->cluster, leaderNode()));
        assert_string_equal(jstr(j, "leader_rpc"), addr);
        assert_true(jint(j, "term") >= 1);
        assert_true(jint(j, "commit_index") >= 1);
        assert_true(jint(j, "applied_index") >= 1);
        assert_int_equal(json_array_size(ms), N_NODES);
        for (size_t i = 0; i < json_array_size(ms); i++) {
            json_t *m = json_array_get(ms, i);
            int idx = (int)jint(m, "id") - 1;
            assert_true(idx >= 0 && idx < N_NODES);
            assert_string_equal(jstr(m, "role"), "voter");
            snprintf(addr, sizeof addr, "127.0.0.1:%d", port(idx));
            assert_string_equal(jstr(m, "http_address"), addr);
            snprintf(addr, sizeof addr, "127.0.0.1:%d",
                     clusterRaftPort(&S->cluster, idx));
            assert_string_equal(jstr(m, "raft_address"), addr);
            snprintf(addr, sizeof addr, "127.0.0.1:%d",
                     clusterRpcPort(&S->cluster, idx));
            assert_string_equal(jstr(m, "rpc_address"), addr);
            if (json_is_true(json_object_get(m, "leader"))) {
                leaders++;
                assert_int_equal(idx, leaderNode());
            }
        }
        assert_int_equal(leaders, 1);
        json_decref(j);
        httpResponseFree(&r);

        j = call(node, "GET", "/healthz", NULL, NULL, 200, &r);
        assert_string_equal(jstr(j, "status"), "ok");
        assert_int_equal(jint(j, "node_id"), clusterNodeId(node));
        assert_true(json_is_true(json_object_get(j, "has_leader")));
        assert_int_equal(json_is_true(json_object_get(j, "is_leader")),
                         node == leaderNode());
        assert_string_equal(httpHeader(&r, "Access-Control-Allow-Origin"),
                            "*");
        json_decref(j);
        httpResponseFree(&r);

        j = call(node, "GET", "/readyz", NULL, NULL, 200, &r);
        assert_string_equal(jstr(j, "status"), "ready");
        assert_true(json_is_true(json_object_get(j, "ready")));
        json_decref(j);
        httpResponseFree(&r);
    }
    passed();
}

/* The write gate GET /v1/fence/{id}?token=T (also spelled
 * /v1/locks/{id}/check?token=T): 204 for the holder's token (with its
 * ETag), 409 lock-held naming the holder for another token, 412 token-stale
 * once nobody holds it, 400 without a usable token. */
static void test_fence(void **state)
{
    struct http_response r;
    char path[96];
    uint64_t t = acquire(leaderNode(), "fence/1", "writer", 10000);
    json_t *j;
    (void)state;

    for (int k = 0; k < 2; k++) {
        int node = k == 0 ? followerNode() : leaderNode();
        snprintf(path, sizeof path, "/v1/fence/fence/1?token=%" PRIu64, t);
        j = call(node, "GET", path, NULL, NULL, 204, &r);
        assert_null(j);
        assert_int_equal(etag(&r), t);
        httpResponseFree(&r);
        snprintf(path, sizeof path, "/v1/fence/fence/1?token=%%22%" PRIu64
                 "%%22", t);
        j = call(node, "GET", path, NULL, NULL, 204, &r);
        httpResponseFree(&r);

        snprintf(path, sizeof path, "/v1/fence/fence/1?token=%" PRIu64,
                 t - 1);
        j = callProblem(node, "GET", path, NULL, NULL, 409, "lock-held", &r);
        assert_string_equal(jstr(j, "holder"), "writer");
        assert_int_equal((uint64_t)jint(j, "holder_token"), t);
        json_decref(j);
        httpResponseFree(&r);

        /* DESIGN's other spelling of the gate. */
        snprintf(path, sizeof path, "/v1/locks/fence/1/check?token=%" PRIu64,
                 t);
        j = call(node, "GET", path, NULL, NULL, 204, &r);
        assert_int_equal(etag(&r), t);
        httpResponseFree(&r);
        snprintf(path, sizeof path, "/v1/locks/fence/1/check?token=%" PRIu64,
                 t + 1);
        j = callProblem(node, "GET", path, NULL, NULL, 409, "lock-held", &r);
        json_decref(j);
        httpResponseFree(&r);

        j = callProblem(node, "GET", "/v1/fence/fence/1", NULL, NULL, 400,
                        "invalid-request", &r);
        assert_string_equal(jstr(j, "field"), "token");
        json_decref(j);
        httpResponseFree(&r);
        j = callProblem(node, "GET", "/v1/fence/fence/1?token=abc", NULL, NULL,
                        400, "invalid-request", &r);
        assert_string_equal(jstr(j, "field"), "token");
        json_decref(j);
        httpResponseFree(&r);
    }
    release(followerNode(), "fence/1", t);
    snprintf(path, sizeof path, "/v1/fence/fence/1?token=%" PRIu64, t);
    j = callProblem(followerNode(), "GET", path, NULL, NULL, 412,
                    "token-stale", &r);
    json_decref(j);
    httpResponseFree(&r);
    passed();
}

/* One keep-alive connection to a follower carries pipelined requests:
 * the answers come back complete and in request order (each echoing its
 * X-Request-Id) even though some are relayed to the leader and others are
 * answered locally; a request pipelined after a PUT or before a DELETE is
 * ordered with it; the connection then serves more requests; 40 pipelined
 * requests (beyond the 32 in progress per connection) are all answered;
 * Connection: close ends it after the answer. */
static void test_keepalive_pipelining(void **state)
{
    struct raw_in in = { 0 };
    struct raw_resp rr;
    char buf[4096];
    char hv[64];
    uint64_t token = 0;
    int fd = rawConnect(port(followerNode()));
    static const char acq[] = "{\"holder\":\"piper\",\"ttl_ms\":10000}";
    int n;
    (void)state;

    n = snprintf(buf, sizeof buf,
                 "PUT /v1/locks/pipe/1 HTTP/1.1\r\nHost: t\r\n"
                 "X-Request-Id: pipe-1\r\nContent-Length: %zu\r\n\r\n%s"
                 "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: pipe-2\r\n"
                 "\r\n"
                 "GET /v1/locks/pipe/1 HTTP/1.1\r\nHost: t\r\n"
                 "X-Request-Id: pipe-3\r\n\r\n"
                 "HEAD /v1/cluster HTTP/1.1\r\nHost: t\r\n"
                 "X-Request-Id: pipe-4\r\n\r\n"
                 "GET /nowhere HTTP/1.1\r\nHost: t\r\n"
                 "X-Request-Id: pipe-5\r\n\r\n",
                 strlen(acq), acq);
    assert_true(rawSend(fd, buf, (size_t)n));
    {
        static const int want[] = { 201, 200, 200, 200, 404 };
        for (int i = 0; i < 5; i++) {
            char rid[16];
            if (!rawNext(fd, &in, &rr, i == 3)) {
                fail_msg("pipelined answer %d missing (got %zu bytes: %.300s)",
                         i + 1, in.len, in.p != NULL ? in.p : "");
            }
            snprintf(rid, sizeof rid, "pipe-%d", i + 1);
            assert_int_equal(rr.status, want[i]);
            assert_non_null(rawHeader(rr.head, "X-Request-Id", hv, sizeof hv));
            assert_string_equal(hv, rid);
            assert_null(rawHeader(rr.head, "Connection", hv, sizeof hv));
            if (i == 0) {
                assert_non_null(rawHeader(rr.head, "ETag", hv, sizeof hv));
                token = strtoull(hv + 1, NULL, 10);
                assert_true(token > 0);
            }
            if (i == 2 && strstr(rr.body, "\"holder\":\"piper\"") == NULL) {
                /* A request pipelined behind a PUT runs after it. */
                fail_msg("the pipelined GET missed the PUT before it: %s",
                         rr.body);
            }
        }
    }
    /* The same connection again: a GET pipelined before a DELETE still
     * sees the lock (the DELETE waits for it), then the release. */
    n = snprintf(buf, sizeof buf,
                 "GET /v1/locks/pipe/1 HTTP/1.1\r\nHost: t\r\n\r\n"
                 "DELETE /v1/locks/pipe/1 HTTP/1.1\r\nHost: t\r\n"
                 "If-Match: \"%" PRIu64 "\"\r\n\r\n",
                 token);
    assert_true(rawSend(fd, buf, (size_t)n));
    assert_true(rawNext(fd, &in, &rr, false));
    assert_int_equal(rr.status, 200);
    if (strstr(rr.body, "\"holder\":\"piper\"") == NULL) {
        fail_msg("the acquire (token %" PRIu64 ", Raft index %" PRIu64
                 ") is not visible: %s",
                 token, token >> 16, rr.body);
    }
    assert_non_null(rawHeader(rr.head, "ETag", hv, sizeof hv));
    assert_int_equal(strtoull(hv + 1, NULL, 10), token);
    assert_true(rawNext(fd, &in, &rr, false));
    assert_int_equal(rr.status, 204);

    /* 40 in one go, more than the server works on at once. */
    {
        size_t cap = 40 * 80;
        char *many = malloc(cap);
        size_t len = 0;
        assert_non_null(many);
        for (int i = 0; i < 40; i++) {
            len += (size_t)snprintf(many + len, cap - len,
                                    "GET /v1/locks/pipe/%d HTTP/1.1\r\n"
                                    "Host: t\r\n\r\n",
                                    i);
        }
        assert_true(rawSend(fd, many, len));
        free(many);
        for (int i = 0; i < 40; i++) {
            char want[32];
            if (!rawNext(fd, &in, &rr, false)) {
                fail_msg("answer %d of 40 missing", i + 1);
            }
            assert_int_equal(rr.status, 200);
            snprintf(want, sizeof want, "\"resource\":\"pipe/%d\"", i);
            assert_non_null(strstr(rr.body, want));
        }
    }
    /* Connection: close is honoured: the answer, then EOF. */
    n = snprintf(buf, sizeof buf,
                 "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_true(rawSend(fd, buf, (size_t)n));
    assert_true(rawNext(fd, &in, &rr, false));
    assert_int_equal(rr.status, 200);
    assert_true(rawUntilClosed(fd, &in));
    assert_int_equal(in.len, in.off);
    close(fd);
    free(in.p);
    passed();
}

/* Threads of test_many_clients. */
#define N_CLIENTS 100

struct client
{
    pthread_t thread;
    pthread_barrier_t *go;
    int id;
    int port;
    bool contend; /* all clients on one resource */
    int status;   /* contend: the acquire's status */
    uint64_t token;
    char holder[64]; /* contend: the holder named by a 409 */
    char error[256]; /* "" when everything was as expected */
};

static void *clientMain(void *arg)
{
    struct client *c = arg;
    struct http_response r;
    char path[64];
    char body[96];
    char h[64];
    int st;

    pthread_barrier_wait(c->go);
    if (c->contend) {
        snprintf(body, sizeof body, "{\"holder\":\"c%d\",\"ttl_ms\":30000}",
                 c->id);
        c->status = httpRequestTimeout(c->port, "PUT", "/v1/locks/many/one",
                                       NULL, body, 20000, &r);
        if (c->status < 0) {
            snprintf(c->error, sizeof c->error, "acquire: %s", r.error);
        } else {
            json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
            httpETagToken(&r, &c->token);
            if (j != NULL && json_is_string(json_object_get(j, "holder"))) {
                snprintf(c->holder, sizeof c->holder, "%s",
                         json_string_value(json_object_get(j, "holder")));
            }
            json_decref(j);
        }
        httpResponseFree(&r);
        return NULL;
    }
    /* acquire, read, release a resource of its own */
    snprintf(path, sizeof path, "/v1/locks/many/%d", c->id);
    snprintf(body, sizeof body, "{\"holder\":\"c%d\",\"ttl_ms\":30000}",
             c->id);
    st = httpRequestTimeout(c->port, "PUT", path, NULL, body, 20000, &r);
    if (st != 201 || httpETagToken(&r, &c->token) != 0) {
        snprintf(c->error, sizeof c->error, "acquire: %d %s %.100s", st,
                 r.error, r.body != NULL ? r.body : "");
        httpResponseFree(&r);
        return NULL;
    }
    httpResponseFree(&r);
    st = httpRequestTimeout(c->port, "GET", path, NULL, NULL, 20000, &r);
    snprintf(body, sizeof body, "\"holder\":\"c%d\"", c->id);
    if (st != 200 || r.body == NULL || strstr(r.body, body) == NULL) {
        snprintf(c->error, sizeof c->error, "get: %d %s %.100s", st, r.error,
                 r.body != NULL ? r.body : "");
        httpResponseFree(&r);
        return NULL;
    }
    httpResponseFree(&r);
    snprintf(h, sizeof h, "If-Match: \"%" PRIu64 "\"", c->token);
    st = httpRequestTimeout(c->port, "DELETE", path, h, NULL, 20000, &r);
    if (st != 204) {
        snprintf(c->error, sizeof c->error, "release: %d %s %.100s", st,
                 r.error, r.body != NULL ? r.body : "");
    }
    httpResponseFree(&r);
    return NULL;
}

/* Runs N_CLIENTS threads at once (spread over the 3 nodes). */
static void runClients(struct client *cs, bool contend)
{
    pthread_barrier_t go;
    assert_int_equal(pthread_barrier_init(&go, NULL, N_CLIENTS), 0);
    for (int i = 0; i < N_CLIENTS; i++) {
        memset(&cs[i], 0, sizeof cs[i]);
        cs[i].go = &go;
        cs[i].id = i;
        cs[i].port = port(i % N_NODES);
        cs[i].contend = contend;
        assert_int_equal(pthread_create(&cs[i].thread, NULL, clientMain,
                                        &cs[i]),
                         0);
    }
    for (int i = 0; i < N_CLIENTS; i++) {
        pthread_join(cs[i].thread, NULL);
    }
    pthread_barrier_destroy(&go);
}

/* 100 concurrent clients (a connection per request) spread over the
 * nodes: each acquires, reads and releases a lock of its own, all
 * correctly; then all 100 race for one lock: exactly one 201, and 99 409s
 * all naming that winner with its ETag. Then 100 keep-alive connections
 * open at once on one follower are all served, twice each. */
static void test_many_clients(void **state)
{
    struct client *cs = calloc(N_CLIENTS, sizeof *cs);
    int winners = 0;
    int winner = -1;
    (void)state;

    assert_non_null(cs);
    runClients(cs, false);
    for (int i = 0; i < N_CLIENTS; i++) {
        if (cs[i].error[0] != '\0') {
            fail_msg("client %d (node %d): %s", i, i % N_NODES + 1,
                     cs[i].error);
        }
    }
    runClients(cs, true);
    for (int i = 0; i < N_CLIENTS; i++) {
        if (cs[i].status == 201) {
            winners++;
            winner = i;
        } else if (cs[i].status != 409) {
            fail_msg("client %d: %d %s", i, cs[i].status, cs[i].error);
        }
    }
    assert_int_equal(winners, 1);
    for (int i = 0; i < N_CLIENTS; i++) {
        char want[16];
        if (i == winner) {
            continue;
        }
        snprintf(want, sizeof want, "c%d", winner);
        if (strcmp(cs[i].holder, want) != 0 ||
            cs[i].token != cs[winner].token) {
            fail_msg("client %d: 409 names %s (token %" PRIu64
                     "), the winner is %s (%" PRIu64 ")",
                     i, cs[i].holder, cs[i].token, want, cs[winner].token);
        }
    }
    {
        char id[16];
        snprintf(id, sizeof id, "c%d", winner);
        assert_int_equal(heldToken(leaderNode(), "many/one", id),
                         cs[winner].token);
    }
    release(followerNode(), "many/one", cs[winner].token);
    free(cs);

    /* 100 connections open at the same time, each used twice. */
    {
        int fds[N_CLIENTS];
        struct raw_in ins[N_CLIENTS];
        static const char req[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
        memset(ins, 0, sizeof ins);
        for (int i = 0; i < N_CLIENTS; i++) {
            fds[i] = rawConnect(port(followerNode()));
        }
        for (int round = 0; round < 2; round++) {
            for (int i = 0; i < N_CLIENTS; i++) {
                assert_true(rawSend(fds[i], req, sizeof req - 1));
            }
            for (int i = 0; i < N_CLIENTS; i++) {
                struct raw_resp rr;
                if (!rawNext(fds[i], &ins[i], &rr, false)) {
                    fail_msg("connection %d, round %d: no answer", i, round);
                }
                assert_int_equal(rr.status, 200);
            }
        }
        for (int i = 0; i < N_CLIENTS; i++) {
            close(fds[i]);
            free(ins[i].p);
        }
    }
    checkAlive(followerNode());
    passed();
}

/* One garbage case of test_garbage. */
struct junk
{
    const char *data;
    size_t len;       /* 0: strlen(data) */
    const char *want; /* the answer starts so; NULL: any 4xx, or none */
};

/* Garbage on the wire gets a 400 (505 for an HTTP version other than 1.x)
 * and a closed connection; a valid request before the junk is answered
 * first; the daemon keeps serving, on followers and the leader. */
static void test_garbage(void **state)
{
    static const char tls_hello[] = {
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        0x5a, 0x00, 0x11, (char)0xfe, (char)0x80, 0x00, 0x0d, 0x0a, 0x0d, 0x0a,
    };
    static char noise[4096];
    const struct junk cases[] = {
        { "GARBAGE\r\n\r\n", 0, "HTTP/1.1 400" },
        { "GET / HTTP/9.9\r\n\r\n", 0, "HTTP/1.1 505" },
        /* the HTTP/2 preface: http_parser 2.9 has no PRI method */
        { "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, "HTTP/1.1 400" },
        { "GET / HTTP/2.0\r\n\r\n", 0, "HTTP/1.1 505" },
        { "GET /healthz HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 0,
          "HTTP/1.1 400" },
        { "GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n", 0,
          "HTTP/1.1 400" },
        { "PUT /v1/locks/g HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
          "zz\r\n",
          0, "HTTP/1.1 400" },
        { "PUT /v1/locks/g HTTP/1.1\r\nContent-Length: 5\r\n"
          "Content-Length: 6\r\n\r\nhello!",
          0, "HTTP/1.1 400" },
        { "\0\0\0\0\0\0\0\0\r\n\r\n", 12, "HTTP/1.1 400" },
        { "GET /v1/locks/\x7f\x80\xff HTTP/1.1\r\n\r\n", 0,
          "HTTP/1.1 400" },
        { "GET /healthz HTTP/1.1\r\n\r\n\x01\x02\x03 junk\r\n\r\n", 0,
          "HTTP/1.1 200" },
        { tls_hello, sizeof tls_hello, "HTTP/1.1 400" },
        { noise, sizeof noise, NULL },
    };
    uint64_t seed = 0x2545f4914f6cdd1dULL;
    (void)state;

    for (size_t k = 0; k < sizeof noise; k++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        noise[k] = (char)seed;
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int node = i % 2 ? leaderNode() : followerNode();
        int fd = rawConnect(port(node));
        struct raw_in in = { 0 };
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].data);

        /* The server may close before taking everything (that is fine). */
        rawSend(fd, cases[i].data, len);
        if (!rawUntilClosed(fd, &in)) {
            fail_msg("case %zu: the connection stayed open", i);
        }
        if (cases[i].want != NULL) {
            if (in.len < 12 || strncmp(in.p, cases[i].want, 12) != 0) {
                fail_msg("case %zu: answered %.80s, want %s", i,
                         in.p != NULL ? in.p : "nothing", cases[i].want);
            }
            if (strcmp(cases[i].want, "HTTP/1.1 200") == 0) {
                /* ... then the junk after it is a 400. */
                assert_non_null(strstr(in.p + 12, "HTTP/1.1 400"));
            } else {
                assert_non_null(strstr(in.p, "application/problem+json"));
            }
        } else if (in.len > 0 && strncmp(in.p, "HTTP/1.1 4", 10) != 0) {
            fail_msg("case %zu: answered %.80s", i, in.p);
        }
        close(fd);
        free(in.p);
    }

    /* Half a request, then a reset (SO_LINGER 0), many times. */
    for (int i = 0; i < 20; i++) {
        struct linger lg = { 1, 0 };
        int fd = rawConnect(port(i % N_NODES));
        static const char half[] =
            "PUT /v1/locks/g HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"ho";
        rawSend(fd, half, sizeof half - 1);
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
    }
    for (int node = 0; node < N_NODES; node++) {
        checkAlive(node);
    }
    release(leaderNode(), "garbage/after",
            acquire(followerNode(), "garbage/after", "g", 5000));
    passed();
}

/* GET /metrics is served (the format is checked by promtool in
 * test_metrics.sh) and counts what this test did. */
static void test_metrics_served(void **state)
{
    struct http_response r;
    (void)state;

    assert_int_equal(send1(followerNode(), "GET", "/metrics", NULL, NULL, &r),
                     200);
    checkCommonHeaders(&r, "GET /metrics");
    assert_non_null(r.content_type);
    assert_non_null(strstr(r.content_type, "text/plain"));
    assert_non_null(strstr(r.content_type, "version=0.0.4"));
    assert_non_null(strstr(r.body, "# TYPE tenure_http_responses_total "
                                   "counter\n"));
    assert_non_null(strstr(r.body, "tenure_http_conflicts_total{kind="
                                   "\"lock_held\"} "));
    assert_non_null(strstr(r.body, "tenure_raft_term "));
    assert_null(strstr(r.body, "tenure_http_conflicts_total{kind="
                               "\"lock_held\"} 0\n"));
    httpResponseFree(&r);
    passed();
}

/* The status page is HTML served by every node (its rendering is checked
 * in headless Chromium by test_status_page.sh). */
static void test_status_page_served(void **state)
{
    (void)state;
    for (int node = 0; node < N_NODES; node++) {
        struct http_response r;
        assert_int_equal(send1(node, "GET", "/", NULL, NULL, &r), 200);
        checkCommonHeaders(&r, "GET /");
        assert_non_null(strstr(r.content_type, "text/html"));
        assert_non_null(strstr(r.body, "<title>tenure</title>"));
        httpResponseFree(&r);
    }
    passed();
}

/* kill -9 of the leader: the lock taken through a follower is still held,
 * with the same ETag and holder, on every surviving node; its holder can
 * renew and release it through the new leader. */
static void test_leader_kill(void **state)
{
    struct http_response r;
    char h[64];
    uint64_t t = acquire(followerNode(), "kill/1", "survivor", 20000);
    uint64_t keep = acquire(leaderNode(), "kill/keep", "keeper", 60000);
    int old = leaderNode();
    int leader;
    json_t *j;
    (void)state;

    assert_int_equal(clusterKill(&S->cluster, old), 0);
    leader = clusterWaitLeader(&S->cluster, 15000);
    if (leader < 0) {
        fail_msg("no new leader: %s", S->cluster.errmsg);
    }
    assert_int_not_equal(leader, old);
    S->leader = leader;
    for (int node = 0; node < N_NODES; node++) {
        if (node == old) {
            continue;
        }
        assert_int_equal(heldToken(node, "kill/1", "survivor"), t);
        assert_int_equal(heldToken(node, "kill/keep", "keeper"), keep);
    }
    ifMatch(h, sizeof h, t);
    j = call(followerNode() == old ? (leader + 2) % N_NODES : followerNode(),
             "PUT", "/v1/locks/kill/1", h, NULL, 200, &r);
    assert_int_equal(etag(&r), t);
    json_decref(j);
    httpResponseFree(&r);
    j = callProblem(leader, "PUT", "/v1/locks/kill/1", NULL,
                    "{\"holder\":\"other\"}", 409, "lock-held", &r);
    assert_string_equal(jstr(j, "holder"), "survivor");
    json_decref(j);
    httpResponseFree(&r);
    release(leader, "kill/1", t);
    assert_true(acquire(leader, "kill/1", "next", 5000) > t);
    passed();
}

/* With a second node killed the survivor has no quorum: lock operations
 * answer 503 (no-leader / no-quorum) with Retry-After (a relay cut off
 * mid-request may first answer 504 commit-unknown), /readyz 503, /healthz
 * 200, and a stale read still shows the lock. Restarting the two nodes
 * brings the cluster and the lock back. */
static void test_no_quorum(void **state)
{
    struct http_response r;
    uint64_t end;
    int survivor = -1;
    int killed[2];
    int n_killed = 0;
    json_t *j;
    uint64_t keep;
    (void)state;

    keep = heldToken(leaderNode(), "kill/keep", "keeper");
    assert_true(keep > 0);
    for (int node = 0; node < N_NODES; node++) {
        if (!clusterRunning(&S->cluster, node)) {
            killed[n_killed++] = node;
        }
    }
    assert_int_equal(n_killed, 1);
    killed[n_killed++] = leaderNode();
    assert_int_equal(clusterKill(&S->cluster, leaderNode()), 0);
    for (int node = 0; node < N_NODES; node++) {
        if (clusterRunning(&S->cluster, node)) {
            survivor = node;
        }
    }
    assert_true(survivor >= 0);

    /* The survivor notices within an election timeout or so. */
    end = monoMs() + 10000;
    for (;;) {
        int status = send1(survivor, "GET", "/readyz", NULL, NULL, &r);
        httpResponseFree(&r);
        if (status == 503) {
            break;
        }
        if (status != 200 || monoMs() >= end) {
            fail_msg("/readyz without quorum: %d", status);
        }
        sleepMs(50);
    }
    end = monoMs() + 10000;
    for (;;) {
        int status = send1(survivor, "PUT", "/v1/locks/nq/1", NULL,
                           "{\"holder\":\"nq\",\"ttl_ms\":5000}", &r);
        if (status == 503) {
            break;
        }
        if (status != 504 || monoMs() >= end) {
            fail_msg("without quorum: %d %.500s", status, r.body);
        }
        httpResponseFree(&r);
        sleepMs(100);
    }
    httpResponseFree(&r);
    j = call(survivor, "PUT", "/v1/locks/nq/1", NULL,
             "{\"holder\":\"nq\",\"ttl_ms\":5000}", 503, &r);
    assert_non_null(r.retry_after);
    assert_non_null(strstr(r.content_type, "application/problem+json"));
    if (strcmp(jstr(j, "type"), PROBLEM "no-quorum") != 0 &&
        strcmp(jstr(j, "type"), PROBLEM "no-leader") != 0) {
        fail_msg("503 of type %s", jstr(j, "type"));
    }
    json_decref(j);
    httpResponseFree(&r);

    j = call(survivor, "GET", "/readyz", NULL, NULL, 503, &r);
    assert_string_equal(jstr(j, "status"), "not-ready");
    assert_non_null(r.retry_after);
    json_decref(j);
    httpResponseFree(&r);
    j = call(survivor, "GET", "/healthz", NULL, NULL, 200, &r);
    json_decref(j);
    httpResponseFree(&r);
    j = call(survivor, "GET", "/v1/locks/kill/keep?consistency=stale", NULL,
             NULL, 200, &r);
    assert_string_equal(jstr(j, "state"), "held");
    assert_int_equal(etag(&r), keep);
    json_decref(j);
    httpResponseFree(&r);

    for (int k = 0; k < n_killed; k++) {
        if (clusterRestart(&S->cluster, killed[k]) != 0) {
            fail_msg("restart: %s", S->cluster.errmsg);
        }
    }
    S->leader = clusterWaitLeader(&S->cluster, 20000);
    if (S->leader < 0) {
        fail_msg("no leader after the restarts: %s", S->cluster.errmsg);
    }
    for (int node = 0; node < N_NODES; node++) {
        assert_int_equal(heldToken(node, "kill/keep", "keeper"), keep);
    }
    release(followerNode(), "kill/keep", keep);
    passed();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ready_node_relays),
        cmocka_unit_test(test_acquire_created),
        cmocka_unit_test(test_conflict_names_holder),
        cmocka_unit_test(test_conflict_counts_queue),
        cmocka_unit_test(test_idempotent_replay),
        cmocka_unit_test(test_renew_release),
        cmocka_unit_test(test_stale_token),
        cmocka_unit_test(test_expired_lease),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_routing),
        cmocka_unit_test(test_size_limits),
        cmocka_unit_test(test_state_and_list),
        cmocka_unit_test(test_long_poll),
        cmocka_unit_test(test_cluster_health),
        cmocka_unit_test(test_fence),
        cmocka_unit_test(test_keepalive_pipelining),
        cmocka_unit_test(test_many_clients),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_metrics_served),
        cmocka_unit_test(test_status_page_served),
        cmocka_unit_test(test_leader_kill),
        cmocka_unit_test(test_no_quorum),
    };
    _Static_assert(sizeof tests / sizeof tests[0] == N_TESTS,
                   "N_TESTS must count the tests");
    return cmocka_run_group_tests(tests, groupSetUp, groupTearDown);
}
