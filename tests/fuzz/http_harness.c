/* In-process HTTP shim driven over one TCP connection (http_harness.h). */
#include "http_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <http_parser.h>
#include <jansson.h>
#include <uv.h>

#include "fuzz.h"
#include "http.h"
#include "tenure.pb-c.h"

#define MAX_PENDING 4096
#define MAX_OUTPUT (4u << 20)
#define CLOSE_BOUND_MS 20000

struct pending
{
    struct dispatch_req *req;
    bool canceled;
};

static struct
{
    bool ready;
    uv_loop_t loop;
    struct http_server srv;
    int port;
    const struct hh_options *o;
    Tn__Response *canned; /* unpacked o->response, or NULL */
    struct pending pending[MAX_PENDING];
    size_t n_pending;
    unsigned long submits;
    unsigned long answers;
} H;

static uint64_t nowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------ fake dispatch */

static int fakeSubmit(void *data, struct dispatch_req *req)
{
    (void)data;
    FUZZ_CHECK(req != NULL && req->request != NULL && req->cb != NULL,
               "submit of an incomplete request");
    if (H.o->refuse) {
        return TN__STATUS__CANCELED;
    }
    FUZZ_CHECK(H.n_pending < MAX_PENDING, "too many requests in flight");
    H.pending[H.n_pending].req = req;
    H.pending[H.n_pending].canceled = false;
    H.n_pending++;
    H.submits++;
    return 0;
}

static void fakeCancel(void *data, struct dispatch_req *req)
{
    (void)data;
    for (size_t i = 0; i < H.n_pending; i++) {
        if (H.pending[i].req == req) {
            H.pending[i].canceled = true;
            return;
        }
    }
    /* Cancel of a request whose callback already fired is allowed only
     * if it was never submitted; the shim must not do either. */
    FUZZ_CHECK(0, "cancel of a request that is not pending");
}

static void fakeHealth(void *data, struct dispatch_health *out)
{
    (void)data;
    memset(out, 0, sizeof *out);
    out->node_id = 1;
    out->is_leader = H.o->leader;
    out->has_leader = H.o->status % 2 == 0;
    out->ready = H.o->status % 3 != 0;
    out->term = 3;
    out->commit_index = 40;
    out->applied_index = 39 + H.o->status % 2;
}

static void fakeMetrics(void *data, http_emit_fn emit, void *ctx)
{
    static const char text[] = "# HELP tenure_fake_total A fake counter.\n"
                               "# TYPE tenure_fake_total counter\n"
                               "tenure_fake_total 7\n";
    (void)data;
    emit(ctx, text, sizeof text - 1);
}

static size_t fakeContention(void *data, struct http_contention *out,
                             size_t max)
{
    static const char *const names[] = { "orders/1", "a\"b<c>&", "q" };
    size_t n = max < 3 ? max : 3;
    (void)data;
    for (size_t i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].resource = names[i];
        out[i].conflicts = 10 - i;
        out[i].acquires = 20;
        out[i].waiters = (uint32_t)i;
        out[i].wait_p50_ms = 3;
        out[i].wait_p99_ms = 90;
        out[i].hold_p50_ms = 100;
        out[i].hold_p99_ms = 5000;
    }
    return n;
}

static const char *requestResource(const Tn__Request *rq)
{
    const char *r = NULL;
    switch (rq->body_case) {
    case TN__REQUEST__BODY_ACQUIRE: r = rq->acquire->resource; break;
    case TN__REQUEST__BODY_RELEASE: r = rq->release->resource; break;
    case TN__REQUEST__BODY_RENEW: r = rq->renew->resource; break;
    case TN__REQUEST__BODY_GET_LOCK: r = rq->get_lock->resource; break;
    default: break;
    }
    return r != NULL ? r : "";
}

/* A plausible answer to @rq, as the dispatch would give it. */
static void answerMadeUp(struct dispatch_req *req, bool canceled)
{
    const Tn__Request *rq = req->request;
    Tn__Response r = TN__RESPONSE__INIT;
    Tn__LockInfo li[2] = { TN__LOCK_INFO__INIT, TN__LOCK_INFO__INIT };
    Tn__LockInfo *lis[2] = { &li[0], &li[1] };
    Tn__LockList ll = TN__LOCK_LIST__INIT;
    Tn__Holder h[2] = { TN__HOLDER__INIT, TN__HOLDER__INIT };
    Tn__Holder *hs[2] = { &h[0], &h[1] };
    Tn__ClusterInfo ci = TN__CLUSTER_INFO__INIT;
    Tn__Member m[3] = { TN__MEMBER__INIT, TN__MEMBER__INIT,
                        TN__MEMBER__INIT };
    Tn__Member *mp[3] = { &m[0], &m[1], &m[2] };
    Tn__SessionInfo si = TN__SESSION_INFO__INIT;
    const char *res = requestResource(rq);
    unsigned st = H.o->status % 17;
    uint64_t token = 4242;

    r.id = rq->id;
    r.status = canceled ? TN__STATUS__CANCELED : (Tn__Status)st;
    r.index = 17;
    r.message = (char *)"made-up answer";
    if (r.status == TN__STATUS__NOT_LEADER) {
        r.leader_id = 2;
        r.leader_rpc = (char *)"127.0.0.1:7202";
        r.leader_http = (char *)"127.0.0.1:7302";
    }
    if (rq->body_case == TN__REQUEST__BODY_RELEASE && rq->release->token) {
        token = rq->release->token;
    } else if (rq->body_case == TN__REQUEST__BODY_RENEW && rq->renew->token) {
        token = rq->renew->token;
    }
    for (int i = 0; i < 2; i++) {
        h[i].session = 7 + (uint64_t)i;
        h[i].holder = (char *)(i == 0 ? "alice" : "bob \"the\" <builder>");
        h[i].token = token + (uint64_t)i;
        h[i].acquired_at_ms = UINT64_C(1767225600000);
        h[i].ttl_ms = 10000;
        h[i].expires_in_ms = i == 0 ? 8123 : -1;
        li[i].resource = (char *)(i == 0 ? res : "orders/2");
        li[i].mode = (Tn__LockMode)(H.o->status / 17 % 3);
        li[i].token = token;
        li[i].generation = 3;
        li[i].ttl_ms = 10000;
        li[i].n_holders = st % 3;
        li[i].holders = hs;
        li[i].queue_len = st % 4;
        li[i].lock_delay_until_ms =
            st % 5 == 0 ? UINT64_C(1767225601000) : 0;
        li[i].permits = li[i].mode == TN__LOCK_MODE__SEMAPHORE ? 3 : 0;
        li[i].replayed = st % 2 == 1;
        li[i].session = 7;
    }
    switch (rq->body_case) {
    case TN__REQUEST__BODY_ACQUIRE:
    case TN__REQUEST__BODY_RELEASE:
    case TN__REQUEST__BODY_RENEW:
    case TN__REQUEST__BODY_GET_LOCK:
        r.body_case = TN__RESPONSE__BODY_LOCK;
        r.lock = &li[0];
        break;
    case TN__REQUEST__BODY_LIST_LOCKS:
        ll.n_locks = 2;
        ll.locks = lis;
        r.body_case = TN__RESPONSE__BODY_LIST;
        r.list = &ll;
        break;
    case TN__REQUEST__BODY_CLUSTER_STATUS:
        for (int i = 0; i < 3; i++) {
            m[i].id = (uint64_t)i + 1;
            m[i].raft_address = (char *)"127.0.0.1:7101";
            m[i].rpc_address = (char *)"127.0.0.1:7201";
            m[i].http_address = (char *)"127.0.0.1:7301";
            m[i].role = (char *)"voter";
        }
        ci.leader_id = st % 2 ? 0 : 1;
        ci.leader_rpc = (char *)"127.0.0.1:7201";
        ci.leader_http = (char *)"127.0.0.1:7301";
        ci.term = 3;
        ci.commit_index = 40;
        ci.applied_index = 40;
        ci.node_id = 1;
        ci.state = (char *)"leader";
        ci.n_members = 3;
        ci.members = mp;
        r.body_case = TN__RESPONSE__BODY_CLUSTER;
        r.cluster = &ci;
        break;
    case TN__REQUEST__BODY_SESSION_OPEN:
    case TN__REQUEST__BODY_KEEPALIVE:
    case TN__REQUEST__BODY_SESSION_CLOSE:
        si.session = rq->body_case == TN__REQUEST__BODY_KEEPALIVE
                         ? rq->keepalive->session
                         : 99;
        si.epoch = 2;
        si.ttl_ms = rq->body_case == TN__REQUEST__BODY_SESSION_OPEN
                        ? rq->session_open->ttl_ms
                        : 10000;
        si.holder = (char *)"alice";
        r.body_case = TN__RESPONSE__BODY_SESSION;
        r.session = &si;
        break;
    default:
        break;
    }
    req->cb(req, &r);
}

static void answer(struct pending *p)
{
    H.answers++;
    if (H.canned != NULL && !p->canceled) {
        uint64_t id = H.canned->id;
        H.canned->id = p->req->request->id;
        p->req->cb(p->req, H.canned);
        H.canned->id = id;
        return;
    }
    answerMadeUp(p->req, p->canceled);
}

/* Fire every pending callback (outside any libuv callback, as a later
 * iteration would). Returns how many fired. */
static size_t pump(void)
{
    size_t fired = 0;

    while (H.n_pending > 0) {
        struct pending p;
        if (H.o->reverse) {
            p = H.pending[--H.n_pending];
        } else {
            p = H.pending[0];
            memmove(&H.pending[0], &H.pending[1],
                    (H.n_pending - 1) * sizeof H.pending[0]);
            H.n_pending--;
        }
        answer(&p); /* may submit more (deferred pipelined requests) */
        fired++;
    }
    return fired;
}

static void logHook(void *data, int level, const char *line)
{
    (void)data;
    FUZZ_CHECK(level >= 0 && level <= 3, "log level %d", level);
    FUZZ_CHECK(line != NULL, "NULL log line");
    FUZZ_CHECK(strchr(line, '\n') == NULL && strchr(line, '\r') == NULL,
               "a log line contains a line break: %s", line);
}

void hhInit(void)
{
    struct http_backend b;
    struct http_config cfg;
    static const struct hh_options defaults = { 0 };

    if (H.ready) {
        return;
    }
    H.o = &defaults;
    FUZZ_CHECK(uv_loop_init(&H.loop) == 0, "uv_loop_init");
    memset(&b, 0, sizeof b);
    b.submit = fakeSubmit;
    b.cancel = fakeCancel;
    b.health = fakeHealth;
    b.metrics = fakeMetrics;
    b.contention = fakeContention;
    httpConfigDefaults(&cfg);
    cfg.idle_timeout_ms = 2000;
    cfg.request_timeout_ms = 2000;
    cfg.linger_ms = 50;
    cfg.log = logHook;
    FUZZ_CHECK(httpServerInit(&H.srv, &H.loop, &b, "127.0.0.1:0", &cfg) == 0,
               "httpServerInit: %s", httpServerErrmsg(&H.srv));
    FUZZ_CHECK(httpServerStart(&H.srv) == 0, "httpServerStart: %s",
               httpServerErrmsg(&H.srv));
    H.port = httpServerPort(&H.srv);
    FUZZ_CHECK(H.port > 0, "no port");
    H.ready = true;
}

/* ----------------------------------------------------- response check */

struct rcheck
{
    http_parser p;
    bool json;
    bool in_ct;
    char *body;
    size_t body_len;
    size_t body_cap;
    unsigned responses;
};

static int rcHeaderField(http_parser *p, const char *at, size_t n)
{
    struct rcheck *rc = p->data;
    rc->in_ct = n == 12 && strncasecmp(at, "Content-Type", 12) == 0;
    return 0;
}

static int rcHeaderValue(http_parser *p, const char *at, size_t n)
{
    struct rcheck *rc = p->data;
    if (rc->in_ct) {
        for (size_t i = 0; i + 4 <= n; i++) {
            if (strncasecmp(at + i, "json", 4) == 0) {
                rc->json = true;
            }
        }
    }
    return 0;
}

static int rcBegin(http_parser *p)
{
    struct rcheck *rc = p->data;
    rc->json = false;
    rc->in_ct = false;
    rc->body_len = 0;
    return 0;
}

static int rcBody(http_parser *p, const char *at, size_t n)
{
    struct rcheck *rc = p->data;
    if (rc->body_len + n > rc->body_cap) {
        size_t cap = (rc->body_len + n) * 2;
        char *nb = realloc(rc->body, cap);
        FUZZ_CHECK(nb != NULL, "out of memory");
        rc->body = nb;
        rc->body_cap = cap;
    }
    memcpy(rc->body + rc->body_len, at, n);
    rc->body_len += n;
    return 0;
}

static int rcComplete(http_parser *p)
{
    struct rcheck *rc = p->data;

    FUZZ_CHECK(p->status_code >= 100 && p->status_code <= 599,
               "status %u", p->status_code);
    FUZZ_CHECK(p->http_major == 1, "response version %u.%u", p->http_major,
               p->http_minor);
    if (rc->json && rc->body_len > 0) {
        json_error_t err;
        json_t *j = json_loadb(rc->body, rc->body_len, 0, &err);
        FUZZ_CHECK(j != NULL, "a %u response is not valid JSON (%s): %.*s",
                   p->status_code, err.text, (int)rc->body_len, rc->body);
        json_decref(j);
    }
    rc->responses++;
    return 0;
}

static const http_parser_settings rcSettings = {
    .on_message_begin = rcBegin,
    .on_header_field = rcHeaderField,
    .on_header_value = rcHeaderValue,
    .on_body = rcBody,
    .on_message_complete = rcComplete,
};

/* HEAD answers carry a Content-Length without a body, which a response
 * parser cannot tell without pairing each answer with its request; inputs
 * that may contain a HEAD request are not checked. */
static bool mayHaveHead(const uint8_t *req, size_t len)
{
    for (size_t i = 0; i + 4 <= len; i++) {
        if (memcmp(req + i, "HEAD", 4) == 0) {
            return true;
        }
    }
    return false;
}

static void checkOutput(const char *out, size_t len)
{
    struct rcheck rc;
    size_t n;

    memset(&rc, 0, sizeof rc);
    http_parser_init(&rc.p, HTTP_RESPONSE);
    rc.p.data = &rc;
    n = http_parser_execute(&rc.p, &rcSettings, out, len);
    FUZZ_CHECK(HTTP_PARSER_ERRNO(&rc.p) == HPE_OK && n == len,
               "the server sent malformed HTTP (%s at byte %zu of %zu): "
               "%.*s",
               http_errno_name(HTTP_PARSER_ERRNO(&rc.p)), n, len,
               (int)(len < 2000 ? len : 2000), out);
    free(rc.body);
}

/* ------------------------------------------------------------- client */

static int connectClient(void)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    FUZZ_CHECK(fd >= 0, "socket: %s", strerror(errno));
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)H.port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        FUZZ_CHECK(errno == EINPROGRESS, "connect: %s", strerror(errno));
    }
    return fd;
}

static size_t openConnections(void)
{
    struct http_stats *st = malloc(sizeof *st);
    size_t n;
    FUZZ_CHECK(st != NULL, "out of memory");
    httpServerStats(&H.srv, st);
    n = (size_t)st->connections_open;
    free(st);
    return n;
}

void hhRun(const uint8_t *req, size_t len, const struct hh_options *o)
{
    int fd;
    size_t written = 0;
    bool shut = false;
    bool eof = false;
    char *out = malloc(MAX_OUTPUT);
    size_t out_len = 0;
    uint64_t start;

    hhInit();
    FUZZ_CHECK(out != NULL, "out of memory");
    H.o = o;
    H.canned = NULL;
    if (o->response != NULL && o->response_len > 0) {
        H.canned = tn__response__unpack(NULL, o->response_len, o->response);
    }
    H.submits = 0;
    H.answers = 0;
    fd = connectClient();
    start = nowMs();
    while (!eof) {
        bool progress = false;
        ssize_t n;

        uv_run(&H.loop, UV_RUN_NOWAIT);
        if (written < len) {
            size_t want = len - written;
            if (o->chunk > 0 && want > o->chunk) {
                want = o->chunk;
            }
            n = send(fd, req + written, want, MSG_NOSIGNAL);
            if (n > 0) {
                written += (size_t)n;
                progress = true;
            } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                       errno != EINPROGRESS && errno != ENOTCONN) {
                written = len; /* the server closed: stop sending */
            }
        }
        if (written == len && !shut) {
            if (shutdown(fd, SHUT_WR) == 0 || errno != ENOTCONN) {
                shut = true;
            }
        }
        n = recv(fd, out + out_len, MAX_OUTPUT - out_len, 0);
        if (n > 0) {
            out_len += (size_t)n;
            FUZZ_CHECK(out_len < MAX_OUTPUT, "more than %u bytes of answers",
                       MAX_OUTPUT);
            progress = true;
        } else if (n == 0) {
            eof = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK &&
                   errno != ENOTCONN) {
            eof = true; /* reset: keep what arrived */
        }
        if (pump() > 0) {
            progress = true;
        }
        if (!progress) {
            struct pollfd pf = { fd, POLLIN, 0 };
            FUZZ_CHECK(nowMs() - start < CLOSE_BOUND_MS,
                       "the server neither answered nor closed within %d ms "
                       "(sent %zu of %zu bytes, got %zu)",
                       CLOSE_BOUND_MS, written, len, out_len);
            poll(&pf, 1, 1);
        }
    }
    close(fd);
    /* The server side must go away too. */
    while (openConnections() > 0 || H.n_pending > 0) {
        uv_run(&H.loop, UV_RUN_NOWAIT);
        if (pump() == 0) {
            FUZZ_CHECK(nowMs() - start < CLOSE_BOUND_MS,
                       "a connection was not freed within %d ms",
                       CLOSE_BOUND_MS);
            uv_sleep(1);
        }
    }
    FUZZ_CHECK(H.answers == H.submits, "%lu submitted, %lu answered",
               H.submits, H.answers);
    if (getenv("TN_FUZZ_VERBOSE") != NULL) {
        /* Debugging a reproducer: what went each way. */
        fprintf(stderr, "---- sent %zu bytes:\n%.*s\n---- received %zu bytes:\n"
                        "%.*s\n----\n",
                len, (int)len, (const char *)req, out_len, (int)out_len, out);
    }
    if (!mayHaveHead(req, len)) {
        checkOutput(out, out_len);
    }
    if (H.canned != NULL) {
        tn__response__free_unpacked(H.canned, NULL);
        H.canned = NULL;
    }
    free(out);
}
