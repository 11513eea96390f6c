/* The HTTP shim against a fake dispatch, over real TCP on 127.0.0.1.
 *
 * The server runs on its own loop in a thread; the fake backend answers
 * canned Tn__Response values from uv timers (never synchronously), chosen
 * by the resource name (busy*, delay*, slow*, hang*, ...). The test talks
 * to the server with a small blocking client that parses responses with
 * http_parser, so pipelining, garbage and limits can be driven byte by
 * byte. */
#include "lib/test.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>
#include <jansson.h>
#include <uv.h>

#include "http.h"

/* ======================================================== fake backend */

#define HOLDER_TOKEN 77
#define HOLDER_ACQUIRED_AT 1767225600000ULL /* 2026-01-01T00:00:00.000Z */

struct fake_call
{
    uv_timer_t timer;
    struct fixture *f;
    struct dispatch_req *req;
    tn_queue link;
    bool canceled;
};

/* What the fake saw in the last request. */
struct seen
{
    int body_case;
    char resource[600];
    char holder[300];
    char prefix[64];
    uint64_t token;
    uint64_t session;
    uint64_t client_id;
    uint64_t seq;
    uint64_t index;
    uint32_t ttl_ms;
    uint32_t wait_ms;
    uint32_t lock_delay_ms;
    uint32_t permits;
    uint32_t limit;
    int mode;
    bool forward;
    bool stale;
};

struct fixture
{
    uv_loop_t loop;
    uv_async_t stop;
    uv_thread_t thread;
    struct http_server srv;
    struct http_config cfg;
    int port;
    uv_mutex_t mu;
    /* guarded by mu */
    struct seen last;
    unsigned n_submits;
    unsigned n_cancels;
    char log[16384];
    bool refuse;
    bool ready;
    /* loop thread only */
    tn_queue calls;
    uint64_t idem_ids[32];
    uint64_t idem_tokens[32];
    unsigned n_idem;
    uint64_t next_token;
    bool closed;
};

static uint64_t nowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool startsWith(const char *s, const char *p)
{
    return s != NULL && strncmp(s, p, strlen(p)) == 0;
}

static const char *requestResource(const Tn__Request *rq)
{
    switch (rq->body_case) {
    case TN__REQUEST__BODY_ACQUIRE:
        return rq->acquire->resource;
    case TN__REQUEST__BODY_RELEASE:
        return rq->release->resource;
    case TN__REQUEST__BODY_RENEW:
        return rq->renew->resource;
    case TN__REQUEST__BODY_GET_LOCK:
        return rq->get_lock->resource;
    default:
        return "";
    }
}

static void fakeRecord(struct fixture *f, const Tn__Request *rq)
{
    struct seen s;

    memset(&s, 0, sizeof s);
    s.body_case = rq->body_case;
    s.client_id = rq->client_id;
    s.seq = rq->seq;
    s.forward = rq->forward;
    snprintf(s.resource, sizeof s.resource, "%s", requestResource(rq));
    switch (rq->body_case) {
    case TN__REQUEST__BODY_ACQUIRE:
        snprintf(s.holder, sizeof s.holder, "%s", rq->acquire->holder);
        s.session = rq->acquire->session;
        s.ttl_ms = rq->acquire->ttl_ms;
        s.wait_ms = rq->acquire->wait_ms;
        s.lock_delay_ms = rq->acquire->lock_delay_ms;
        s.permits = rq->acquire->permits;
        s.mode = rq->acquire->mode;
        break;
    case TN__REQUEST__BODY_RELEASE:
        s.token = rq->release->token;
        break;
    case TN__REQUEST__BODY_RENEW:
        s.token = rq->renew->token;
        s.ttl_ms = rq->renew->ttl_ms;
        break;
    case TN__REQUEST__BODY_GET_LOCK:
        s.stale = rq->get_lock->stale;
        s.index = rq->get_lock->index;
        s.wait_ms = rq->get_lock->wait_ms;
        break;
    case TN__REQUEST__BODY_LIST_LOCKS:
        snprintf(s.prefix, sizeof s.prefix, "%s", rq->list_locks->prefix);
        s.stale = rq->list_locks->stale;
        s.limit = rq->list_locks->limit;
        break;
    case TN__REQUEST__BODY_SESSION_OPEN:
        snprintf(s.holder, sizeof s.holder, "%s", rq->session_open->holder);
        s.ttl_ms = rq->session_open->ttl_ms;
        break;
    case TN__REQUEST__BODY_KEEPALIVE:
        s.session = rq->keepalive->session;
        break;
    case TN__REQUEST__BODY_SESSION_CLOSE:
        s.session = rq->session_close->session;
        break;
    default:
        break;
    }
    uv_mutex_lock(&f->mu);
    f->last = s;
    f->n_submits++;
    uv_mutex_unlock(&f->mu);
}

static void fillAlice(Tn__Holder *h)
{
    h->session = 7;
    h->holder = (char *)"alice";
    h->token = HOLDER_TOKEN;
    h->acquired_at_ms = HOLDER_ACQUIRED_AT;
    h->ttl_ms = 10000;
    h->expires_in_ms = 8123;
}

static void fakeAnswer(struct fixture *f, struct dispatch_req *req, bool cancel)
{
    const Tn__Request *rq = req->request;
    Tn__Response r = TN__RESPONSE__INIT;
    Tn__LockInfo li = TN__LOCK_INFO__INIT;
    Tn__LockInfo li2 = TN__LOCK_INFO__INIT;
    Tn__LockInfo *lis[2] = { &li, &li2 };
    Tn__LockList ll = TN__LOCK_LIST__INIT;
    Tn__Holder h = TN__HOLDER__INIT;
    Tn__Holder *hs[1] = { &h };
    Tn__ClusterInfo ci = TN__CLUSTER_INFO__INIT;
    Tn__Member m[3] = { TN__MEMBER__INIT, TN__MEMBER__INIT, TN__MEMBER__INIT };
    Tn__Member *mp[3] = { &m[0], &m[1], &m[2] };
    Tn__SessionInfo si = TN__SESSION_INFO__INIT;
    char addr[3][3][32];
    const char *res = requestResource(rq);
    uint64_t token = 0;
    unsigned i;

    r.id = rq->id;
    r.index = 99;
    if (cancel) {
        r.status = TN__STATUS__CANCELED;
        r.message = (char *)"canceled";
        req->cb(req, &r);
        return;
    }
    li.resource = (char *)res;
    switch (rq->body_case) {
    case TN__REQUEST__BODY_ACQUIRE:
        r.body_case = TN__RESPONSE__BODY_LOCK;
        r.lock = &li;
        if (startsWith(res, "busy")) {
            r.status = TN__STATUS__HELD;
            fillAlice(&h);
            li.holders = hs;
            li.n_holders = 1;
            li.queue_len = 2;
            li.generation = 5;
        } else if (startsWith(res, "delay")) {
            r.status = TN__STATUS__LOCK_DELAY;
            li.lock_delay_until_ms = nowMs() + 4500;
        } else if (startsWith(res, "bad")) {
            r.status = TN__STATUS__INVALID_ARGUMENT;
            r.message = (char *)"ttl_ms: must be within 1000..300000";
            r.body_case = TN__RESPONSE__BODY__NOT_SET;
        } else if (startsWith(res, "noleader")) {
            r.status = TN__STATUS__NOT_LEADER;
            r.body_case = TN__RESPONSE__BODY__NOT_SET;
        } else if (startsWith(res, "unknown")) {
            r.status = TN__STATUS__COMMIT_UNKNOWN;
            r.body_case = TN__RESPONSE__BODY__NOT_SET;
        } else if (startsWith(res, "gone")) {
            r.status = TN__STATUS__SESSION_EXPIRED;
            r.body_case = TN__RESPONSE__BODY__NOT_SET;
        } else if (startsWith(res, "timeout")) {
            r.status = TN__STATUS__TIMEOUT;
            r.body_case = TN__RESPONSE__BODY__NOT_SET;
        } else {
            r.status = TN__STATUS__OK;
            if (rq->client_id != 0) {
                for (i = 0; i < f->n_idem; i++) {
                    if (f->idem_ids[i] == rq->client_id) {
                        token = f->idem_tokens[i];
                        li.replayed = 1;
                    }
                }
            }
            if (token == 0) {
                token = ++f->next_token;
                if (rq->client_id != 0 && f->n_idem < 32) {
                    f->idem_ids[f->n_idem] = rq->client_id;
                    f->idem_tokens[f->n_idem++] = token;
                }
            }
            li.token = token;
            li.generation = 3;
            li.session = rq->acquire->session != 0 ? rq->acquire->session : 9;
            li.ttl_ms = rq->acquire->ttl_ms;
            li.mode = rq->acquire->mode;
            li.permits = rq->acquire->permits;
        }
        break;
    case TN__REQUEST__BODY_RELEASE:
    case TN__REQUEST__BODY_RENEW:
        token = rq->body_case == TN__REQUEST__BODY_RELEASE ? rq->release->token
                                                          : rq->renew->token;
        r.body_case = TN__RESPONSE__BODY_LOCK;
        r.lock = &li;
        if (token == 41) {
            r.status = TN__STATUS__TOKEN_MISMATCH;
            fillAlice(&h);
            li.holders = hs;
            li.n_holders = 1;
        } else if (token == 40) {
            r.status = TN__STATUS__LEASE_EXPIRED;
        } else {
            r.status = TN__STATUS__OK;
            li.token = token;
            li.generation = 3;
            li.session = 9;
            li.ttl_ms = rq->body_case == TN__REQUEST__BODY_RENEW &&
                                rq->renew->ttl_ms != 0
                            ? rq->renew->ttl_ms
                            : 10000;
        }
        break;
    case TN__REQUEST__BODY_GET_LOCK:
        r.status = TN__STATUS__OK;
        r.body_case = TN__RESPONSE__BODY_LOCK;
        r.lock = &li;
        if (startsWith(res, "busy")) {
            fillAlice(&h);
            li.holders = hs;
            li.n_holders = 1;
            li.queue_len = 2;
            li.generation = 5;
        } else if (startsWith(res, "delay")) {
            li.lock_delay_until_ms = nowMs() + 4500;
            li.generation = 2;
        } else if (startsWith(res, "missing")) {
            r.status = TN__STATUS__NOT_FOUND;
            r.body_case = TN__RESPONSE__BODY__NOT_SET;
        }
        break;
    case TN__REQUEST__BODY_LIST_LOCKS:
        r.status = TN__STATUS__OK;
        r.body_case = TN__RESPONSE__BODY_LIST;
        r.list = &ll;
        li.resource = (char *)"jobs/a";
        fillAlice(&h);
        li.holders = hs;
        li.n_holders = 1;
        li.generation = 5;
        li2.resource = (char *)"jobs/b";
        li2.mode = TN__LOCK_MODE__SEMAPHORE;
        li2.permits = 3;
        ll.locks = lis;
        ll.n_locks = 2;
        break;
    case TN__REQUEST__BODY_CLUSTER_STATUS:
        r.status = TN__STATUS__OK;
        r.body_case = TN__RESPONSE__BODY_CLUSTER;
        r.cluster = &ci;
        ci.node_id = 2;
        ci.state = (char *)"follower";
        ci.leader_id = 1;
        ci.leader_rpc = (char *)"127.0.0.1:7101";
        ci.leader_http = (char *)"127.0.0.1:7201";
        ci.term = 4;
        ci.commit_index = 120;
        ci.applied_index = 118;
        for (i = 0; i < 3; i++) {
            m[i].id = i + 1;
            snprintf(addr[i][0], 32, "127.0.0.1:%u", 7001 + i);
            snprintf(addr[i][1], 32, "127.0.0.1:%u", 7101 + i);
            snprintf(addr[i][2], 32, "127.0.0.1:%u", 7201 + i);
            m[i].raft_address = addr[i][0];
            m[i].rpc_address = addr[i][1];
            m[i].http_address = addr[i][2];
            m[i].role = (char *)"voter";
        }
        ci.members = mp;
        ci.n_members = 3;
        break;
    case TN__REQUEST__BODY_SESSION_OPEN:
        r.status = TN__STATUS__OK;
        r.body_case = TN__RESPONSE__BODY_SESSION;
        r.session = &si;
        si.session = 555;
        si.epoch = 1;
        si.ttl_ms = rq->session_open->ttl_ms;
        si.holder = rq->session_open->holder;
        break;
    case TN__REQUEST__BODY_KEEPALIVE:
    case TN__REQUEST__BODY_SESSION_CLOSE: {
        uint64_t sid = rq->body_case == TN__REQUEST__BODY_KEEPALIVE
                           ? rq->keepalive->session
                           : rq->session_close->session;
        if (sid != 555) {
            r.status = TN__STATUS__SESSION_EXPIRED;
            break;
        }
        r.status = TN__STATUS__OK;
        r.body_case = TN__RESPONSE__BODY_SESSION;
        r.session = &si;
        si.session = 555;
        si.epoch = 2;
        si.ttl_ms = 20000;
        break;
    }
    default:
        r.status = TN__STATUS__INTERNAL;
        break;
    }
    req->cb(req, &r);
}

static void fakeCallCloseCb(uv_handle_t *h)
{
    free(h->data);
}

static void fakeTimerCb(uv_timer_t *t)
{
    struct fake_call *call = t->data;
    struct fixture *f = call->f;

    tn_queue_remove(&call->link);
    fakeAnswer(f, call->req, call->canceled);
    uv_close((uv_handle_t *)&call->timer, fakeCallCloseCb);
}

static int fakeSubmit(void *data, struct dispatch_req *req)
{
    struct fixture *f = data;
    struct fake_call *call;
    const char *res = requestResource(req->request);
    uint64_t delay = 1;

    uv_mutex_lock(&f->mu);
    if (f->refuse) {
        uv_mutex_unlock(&f->mu);
        return -1;
    }
    uv_mutex_unlock(&f->mu);
    fakeRecord(f, req->request);
    call = calloc(1, sizeof *call);
    assert_non_null(call);
    call->f = f;
    call->req = req;
    uv_timer_init(&f->loop, &call->timer);
    call->timer.data = call;
    tn_queue_insert_tail(&f->calls, &call->link);
    if (strstr(res, "hang") != NULL) {
        return 0; /* answered only when canceled */
    }
    if (strstr(res, "slow") != NULL) {
        delay = 150;
    }
    uv_timer_start(&call->timer, fakeTimerCb, delay, 0);
    return 0;
}

static void fakeCancel(void *data, struct dispatch_req *req)
{
    struct fixture *f = data;
    tn_queue *q;

    uv_mutex_lock(&f->mu);
    f->n_cancels++;
    uv_mutex_unlock(&f->mu);
    TN_QUEUE_FOREACH(q, &f->calls)
    {
        struct fake_call *call = TN_QUEUE_DATA(q, struct fake_call, link);
        if (call->req == req) {
            call->canceled = true;
            uv_timer_start(&call->timer, fakeTimerCb, 0, 0);
            return;
        }
    }
}

static void fakeHealth(void *data, struct dispatch_health *out)
{
    struct fixture *f = data;

    out->node_id = 2;
    out->is_leader = false;
    out->has_leader = true;
    uv_mutex_lock(&f->mu);
    out->ready = f->ready;
    uv_mutex_unlock(&f->mu);
    out->term = 4;
    out->commit_index = 120;
    out->applied_index = 118;
}

static void fakeMetrics(void *data, http_emit_fn emit, void *ctx)
{
    static const char text[] = "# HELP tenure_sessions Open sessions.\n"
                               "# TYPE tenure_sessions gauge\n"
                               "tenure_sessions 3\n";
    (void)data;
    emit(ctx, text, sizeof text - 1);
}

static size_t fakeContention(void *data,
                             struct http_contention *out,
                             size_t max)
{
    (void)data;
    assert_true(max >= 1);
    out[0].resource = "orders/42";
    out[0].conflicts = 17;
    out[0].acquires = 40;
    out[0].waiters = 3;
    out[0].wait_p50_ms = 120;
    out[0].wait_p99_ms = 2400;
    out[0].hold_p50_ms = 800;
    out[0].hold_p99_ms = 9000;
    if (max < 2) {
        return 1;
    }
    out[1].resource = "jobs/a";
    out[1].conflicts = 2;
    return 2;
}

static void captureLog(void *data, int level, const char *line)
{
    struct fixture *f = data;
    size_t n;

    (void)level;
    uv_mutex_lock(&f->mu);
    n = strlen(f->log);
    snprintf(f->log + n, sizeof f->log - n, "%s\n", line);
    uv_mutex_unlock(&f->mu);
}

/* ========================================================== fixture */

static void loopThread(void *arg)
{
    struct fixture *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

static void serverClosedCb(struct http_server *s)
{
    struct fixture *f = s->data;
    f->closed = true;
}

static void stopCb(uv_async_t *a)
{
    struct fixture *f = a->data;
    httpServerClose(&f->srv, serverClosedCb);
    uv_close((uv_handle_t *)a, NULL);
}

static void walkCb(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "leaked handle: %s\n", uv_handle_type_name(h->type));
}

static int setUpWith(void **state, void (*tweak)(struct http_config *))
{
    struct fixture *f = calloc(1, sizeof *f);
    struct http_backend b;

    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_mutex_init(&f->mu), 0);
    tn_queue_init(&f->calls);
    f->ready = true;
    f->next_token = 1000;
    b.data = f;
    b.submit = fakeSubmit;
    b.cancel = fakeCancel;
    b.health = fakeHealth;
    b.metrics = fakeMetrics;
    b.contention = fakeContention;
    httpConfigDefaults(&f->cfg);
    f->cfg.log = captureLog;
    f->cfg.log_data = f;
    f->cfg.linger_ms = 300;
    if (tweak != NULL) {
        tweak(&f->cfg);
    }
    f->srv.data = f;
    assert_int_equal(
        httpServerInit(&f->srv, &f->loop, &b, "127.0.0.1:0", &f->cfg), 0);
    assert_ptr_equal(f->srv.data, f);
    assert_int_equal(httpServerStart(&f->srv), 0);
    f->port = httpServerPort(&f->srv);
    assert_true(f->port > 0);
    assert_int_equal(uv_async_init(&f->loop, &f->stop, stopCb), 0);
    f->stop.data = f;
    assert_int_equal(uv_thread_create(&f->thread, loopThread, f), 0);
    *state = f;
    return 0;
}

static int setUp(void **state)
{
    return setUpWith(state, NULL);
}

static void shortTimeouts(struct http_config *c)
{
    c->request_timeout_ms = 200;
    c->idle_timeout_ms = 300;
}

static int setUpShortTimeouts(void **state)
{
    return setUpWith(state, shortTimeouts);
}

static void smallPipeline(struct http_config *c)
{
    c->max_pipeline = 2;
}

static int setUpSmallPipeline(void **state)
{
    return setUpWith(state, smallPipeline);
}

static void fewConnections(struct http_config *c)
{
    c->max_connections = 2;
}

static int setUpFewConnections(void **state)
{
    return setUpWith(state, fewConnections);
}

static int tearDown(void **state)
{
    struct fixture *f = *state;
    int rv;

    uv_async_send(&f->stop);
    uv_thread_join(&f->thread);
    assert_true(f->closed);
    assert_true(tn_queue_empty(&f->calls));
    rv = uv_loop_close(&f->loop);
    if (rv != 0) {
        uv_walk(&f->loop, walkCb, NULL);
    }
    assert_int_equal(rv, 0);
    uv_mutex_destroy(&f->mu);
    free(f);
    return 0;
}

static void setFlag(struct fixture *f, bool *flag, bool value)
{
    uv_mutex_lock(&f->mu);
    *flag = value;
    uv_mutex_unlock(&f->mu);
}

static struct seen lastSeen(struct fixture *f)
{
    struct seen s;
    uv_mutex_lock(&f->mu);
    s = f->last;
    uv_mutex_unlock(&f->mu);
    return s;
}

static unsigned counter(struct fixture *f, unsigned *which)
{
    unsigned n;
    uv_mutex_lock(&f->mu);
    n = *which;
    uv_mutex_unlock(&f->mu);
    return n;
}

/* Wait (bounded) until *which reaches @want. */
static void waitCounter(struct fixture *f, unsigned *which, unsigned want)
{
    int i;
    for (i = 0; i < 500 && counter(f, which) < want; i++) {
        usleep(10000);
    }
    assert_true(counter(f, which) >= want);
}

/* ========================================================== client */

struct tresp
{
    int status;
    int n_headers;
    char *names[64];
    char *values[64];
    char *body;
    size_t body_len;
    bool complete;
    bool in_value;
    json_t *json;
};

struct tc
{
    int fd;
    char *buf;
    size_t len;
    size_t cap;
    http_parser parser;
    bool head; /* the response being read answers a HEAD */
    struct tresp *r;
};

static char *appendStr(char *s, const char *at, size_t n)
{
    size_t old = s != NULL ? strlen(s) : 0;
    char *p = realloc(s, old + n + 1);
    assert_non_null(p);
    memcpy(p + old, at, n);
    p[old + n] = '\0';
    return p;
}

static int tcOnHeaderField(http_parser *p, const char *at, size_t n)
{
    struct tc *c = p->data;
    struct tresp *r = c->r;

    if (r->in_value || r->n_headers == 0) {
        assert_true(r->n_headers < 64);
        r->n_headers++;
        r->names[r->n_headers - 1] = NULL;
        r->values[r->n_headers - 1] = NULL;
        r->in_value = false;
    }
    r->names[r->n_headers - 1] = appendStr(r->names[r->n_headers - 1], at, n);
    return 0;
}

static int tcOnHeaderValue(http_parser *p, const char *at, size_t n)
{
    struct tc *c = p->data;
    struct tresp *r = c->r;

    r->in_value = true;
    r->values[r->n_headers - 1] =
        appendStr(r->values[r->n_headers - 1], at, n);
    return 0;
}

static int tcOnHeadersComplete(http_parser *p)
{
    struct tc *c = p->data;
    c->r->status = (int)p->status_code;
    return c->head ? 1 : 0;
}

static int tcOnBody(http_parser *p, const char *at, size_t n)
{
    struct tc *c = p->data;
    struct tresp *r = c->r;

    r->body = realloc(r->body, r->body_len + n + 1);
    assert_non_null(r->body);
    memcpy(r->body + r->body_len, at, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return 0;
}

static int tcOnMessageComplete(http_parser *p)
{
    struct tc *c = p->data;
    c->r->complete = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings tcSettings = {
    .on_header_field = tcOnHeaderField,
    .on_header_value = tcOnHeaderValue,
    .on_headers_complete = tcOnHeadersComplete,
    .on_body = tcOnBody,
    .on_message_complete = tcOnMessageComplete,
};

static void tcOpen(struct fixture *f, struct tc *c)
{
    struct sockaddr_in sa;
    int one = 1;

    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)f->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
}

static void tcClose(struct tc *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    free(c->buf);
    c->buf = NULL;
}

static void tcSendRaw(struct tc *c, const char *data, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(c->fd, data + off, n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        assert_true(w > 0);
        off += (size_t)w;
    }
}

static void tcSend(struct tc *c, const char *s)
{
    tcSendRaw(c, s, strlen(s));
}

/* Send one request; @headers are extra "Name: value\r\n" lines. */
static void tcRequest(struct tc *c,
                      const char *method,
                      const char *path,
                      const char *headers,
                      const char *body)
{
    char head[4096];
    int n;

    n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: test\r\n%s",
                 method, path, headers != NULL ? headers : "");
    assert_true(n > 0 && (size_t)n < sizeof head);
    if (body != NULL) {
        n += snprintf(head + n, sizeof head - (size_t)n,
                      "Content-Length: %zu\r\n", strlen(body));
    }
    snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    tcSend(c, head);
    if (body != NULL) {
        tcSend(c, body);
    }
}

static void respFree(struct tresp *r)
{
    int i;
    for (i = 0; i < r->n_headers; i++) {
        free(r->names[i]);
        free(r->values[i]);
    }
    free(r->body);
    if (r->json != NULL) {
        json_decref(r->json);
    }
    memset(r, 0, sizeof *r);
}

/* Read one response (5 s bound). Returns its status, or -1 on EOF/error. */
static int tcRead(struct tc *c, struct tresp *r)
{
    memset(r, 0, sizeof *r);
    c->r = r;
    for (;;) {
        if (c->len > 0) {
            size_t n = http_parser_execute(&c->parser, &tcSettings, c->buf,
                                           c->len);
            enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
            memmove(c->buf, c->buf + n, c->len - n);
            c->len -= n;
            if (err == HPE_PAUSED) {
                http_parser_pause(&c->parser, 0);
            } else if (err != HPE_OK) {
                return -1;
            }
            if (r->complete) {
                c->head = false;
                return r->status;
            }
        }
        {
            struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
            ssize_t got;
            if (poll(&pfd, 1, 5000) <= 0) {
                return -1;
            }
            if (c->cap - c->len < 65536) {
                c->cap = c->cap * 2 + 65536;
                c->buf = realloc(c->buf, c->cap);
                assert_non_null(c->buf);
            }
            got = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
            if (got <= 0) {
                http_parser_execute(&c->parser, &tcSettings, NULL, 0);
                return r->complete ? r->status : -1;
            }
            c->len += (size_t)got;
        }
    }
}

/* True when the server closed the connection (EOF or reset) within 5 s
 * without sending anything more. */
static bool tcClosedByPeer(struct tc *c)
{
    struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
    char b[256];
    ssize_t got;

    if (c->len > 0) {
        return false;
    }
    if (poll(&pfd, 1, 5000) <= 0) {
        return false;
    }
    got = recv(c->fd, b, sizeof b, 0);
    return got <= 0;
}

static const char *hdr(const struct tresp *r, const char *name)
{
    int i;
    for (i = 0; i < r->n_headers; i++) {
        if (r->names[i] != NULL && strcasecmp(r->names[i], name) == 0) {
            return r->values[i] != NULL ? r->values[i] : "";
        }
    }
    return NULL;
}

static json_t *body(struct tresp *r)
{
    json_error_t err;
    if (r->json == NULL) {
        r->json = json_loadb(r->body != NULL ? r->body : "", r->body_len, 0,
                             &err);
        if (r->json == NULL) {
            fail_msg("response body is not JSON: %s (%s)",
                     r->body != NULL ? r->body : "(none)", err.text);
        }
    }
    return r->json;
}

static const char *jstr(struct tresp *r, const char *key)
{
    json_t *v = json_object_get(body(r), key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static long long jint(struct tresp *r, const char *key)
{
    json_t *v = json_object_get(body(r), key);
    if (!json_is_integer(v)) {
        fail_msg("field %s is not an integer in %s", key, r->body);
    }
    return json_integer_value(v);
}

/* One request on a fresh keep-alive connection. */
static int oneShot(struct fixture *f,
                   const char *method,
                   const char *path,
                   const char *headers,
                   const char *body_text,
                   struct tresp *r)
{
    struct tc c;
    int status;

    tcOpen(f, &c);
    c.head = strcmp(method, "HEAD") == 0;
    tcRequest(&c, method, path, headers, body_text);
    status = tcRead(&c, r);
    tcClose(&c);
    return status;
}

/* Assert @r is an RFC 9457 problem of @slug with @status. */
static void assertProblem(struct tresp *r, int status, const char *slug)
{
    char type[128];

    if (r->status != status) {
        fail_msg("want %d %s, got %d: %s", status, slug, r->status,
                 r->body != NULL ? r->body : "");
    }
    assert_string_equal(hdr(r, "Content-Type"), "application/problem+json");
    snprintf(type, sizeof type, "https://tenure.dev/problems/%s", slug);
    assert_string_equal(jstr(r, "type"), type);
    assert_non_null(jstr(r, "title"));
    assert_non_null(jstr(r, "detail"));
    assert_int_equal(jint(r, "status"), status);
    assert_non_null(hdr(r, "X-Request-Id"));
    assert_string_equal(jstr(r, "request_id"), hdr(r, "X-Request-Id"));
}

static void assertField(struct tresp *r, const char *field)
{
    const char *got = jstr(r, "field");
    if (got == NULL || strcmp(got, field) != 0) {
        fail_msg("want field %s in %s", field, r->body);
    }
}

#define BODY_A "{\"holder\":\"a\",\"ttl_ms\":10000}"

/* ========================================================= pure parts */

/* Resource ids: 1..512 bytes of UTF-8 without control characters. */
static void resourceValidation(void **state)
{
    char big[600];
    (void)state;

    assert_null(httpResourceInvalid("orders/42", 9));
    assert_null(httpResourceInvalid("caf\xc3\xa9", 5));
    assert_null(httpResourceInvalid("\xf0\x9f\x94\x92", 4));
    assert_non_null(httpResourceInvalid("", 0));
    memset(big, 'x', sizeof big);
    assert_null(httpResourceInvalid(big, 512));
    assert_non_null(httpResourceInvalid(big, 513));
    assert_non_null(httpResourceInvalid("a\x01", 2));
    assert_non_null(httpResourceInvalid("a\x7f", 2));
    assert_non_null(httpResourceInvalid("a\0b", 3));
    assert_non_null(httpResourceInvalid("\xc2\x85", 2));     /* C1 NEL */
    assert_non_null(httpResourceInvalid("\xff", 1));         /* bad byte */
    assert_non_null(httpResourceInvalid("\xc0\xaf", 2));     /* overlong */
    assert_non_null(httpResourceInvalid("\xed\xa0\x80", 3)); /* surrogate */
    assert_non_null(httpResourceInvalid("\xe2\x82", 2));     /* truncated */
    assert_non_null(httpResourceInvalid("\xf4\x90\x80\x80", 4)); /* >10FFFF */
}

/* Percent-decoding, If-Match parsing, idempotency ids. */
static void helpers(void **state)
{
    char out[64];
    uint64_t token = 0;
    const char *why = NULL;
    (void)state;

    assert_int_equal(httpPercentDecode("a%2Fb%20c+d", 11, out), 7);
    assert_string_equal(out, "a/b c+d");
    assert_int_equal(httpPercentDecode("%e2%82%AC", 9, out), 3);
    assert_string_equal(out, "\xe2\x82\xac");
    assert_int_equal(httpPercentDecode("%zz", 3, out), -1);
    assert_int_equal(httpPercentDecode("%4", 2, out), -1);

    assert_int_equal(httpParseTokenTag("\"42\"", &token, &why), 0);
    assert_int_equal(token, 42);
    assert_int_equal(httpParseTokenTag(" 18446744073709551615 ", &token, &why),
                     0);
    assert_true(token == UINT64_MAX);
    assert_int_equal(httpParseTokenTag("\"18446744073709551616\"", &token,
                                       &why),
                     -1);
    assert_int_equal(httpParseTokenTag("*", &token, &why), -1);
    assert_int_equal(httpParseTokenTag("W/\"42\"", &token, &why), -1);
    assert_int_equal(httpParseTokenTag("\"1\", \"2\"", &token, &why), -1);
    assert_int_equal(httpParseTokenTag("\"0\"", &token, &why), -1);
    assert_int_equal(httpParseTokenTag("\"\"", &token, &why), -1);

    assert_true(httpIdempotencyClientId("k", "acquire", "r") != 0);
    assert_true(httpIdempotencyClientId("k", "acquire", "r") ==
                httpIdempotencyClientId("k", "acquire", "r"));
    assert_true(httpIdempotencyClientId("k", "acquire", "r") !=
                httpIdempotencyClientId("k", "release", "r"));
    assert_true(httpIdempotencyClientId("k", "acquire", "r") !=
                httpIdempotencyClientId("k", "acquire", "s"));
    assert_true(httpIdempotencyClientId("ka", "cquire", "r") !=
                httpIdempotencyClientId("k", "acquire", "r"));
}

/* A bad listen address fails Init without anything to close. */
static void badAddress(void **state)
{
    uv_loop_t loop;
    struct http_server s;
    struct http_backend b = { NULL, fakeSubmit, fakeCancel, fakeHealth,
                              NULL, NULL };
    (void)state;

    assert_int_equal(uv_loop_init(&loop), 0);
    memset(&s, 0, sizeof s);
    assert_int_equal(httpServerInit(&s, &loop, &b, "nope", NULL), UV_EINVAL);
    assert_true(strlen(httpServerErrmsg(&s)) > 0);
    assert_int_equal(httpServerInit(&s, &loop, &b, "127.0.0.1:99999", NULL),
                     UV_EINVAL);
    assert_int_equal(httpServerInit(&s, &loop, &b, "localhost:80", NULL),
                     UV_EINVAL);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ======================================================= lock flows */

/* Acquire of a free lock: 201, ETag, Location, the lease document. */
static void acquireCreated(void **state)
{
    struct fixture *f = *state;
    struct tresp r;
    struct seen s;
    char etag[64];

    assert_int_equal(oneShot(f, "PUT", "/v1/locks/orders/42", NULL, BODY_A, &r),
                     201);
    snprintf(etag, sizeof etag, "\"%lld\"", jint(&r, "token"));
    assert_string_equal(hdr(&r, "ETag"), etag);
    assert_string_equal(hdr(&r, "Location"), "/v1/locks/orders/42");
    assert_string_equal(hdr(&r, "Cache-Control"), "no-store");
    assert_string_equal(hdr(&r, "Content-Type"), "application/json");
    assert_non_null(hdr(&r, "X-Request-Id"));
    assert_string_equal(jstr(&r, "resource"), "orders/42");
    assert_string_equal(jstr(&r, "mode"), "exclusive");
    assert_int_equal(jint(&r, "generation"), 3);
    assert_int_equal(jint(&r, "session"), 9);
    assert_int_equal(jint(&r, "ttl_ms"), 10000);
    /* 10000 - 1% drift - 100 ms margin */
    assert_int_equal(jint(&r, "valid_for_ms"), 9800);
    respFree(&r);

    s = lastSeen(f);
    assert_int_equal(s.body_case, TN__REQUEST__BODY_ACQUIRE);
    assert_string_equal(s.resource, "orders/42");
    assert_string_equal(s.holder, "a");
    assert_int_equal(s.ttl_ms, 10000);
    assert_int_equal(s.session, 0);
    assert_int_equal(s.client_id, 0);
    assert_true(s.forward);
    assert_int_equal(s.mode, TN__LOCK_MODE__EXCLUSIVE);
}

/* Every acquire field reaches the request; ids are percent-decoded. */
static void acquireFields(void **state)
{
    struct fixture *f = *state;
    struct tresp r;
    struct seen s;

    assert_int_equal(
        oneShot(f, "PUT", "/v1/locks/a%2Fb%20c%C3%A9", NULL,
                "{\"holder\":\"w\",\"ttl_ms\":5000,\"wait_ms\":250,"
                "\"mode\":\"semaphore\",\"permits\":3,\"lock_delay_ms\":700,"
                "\"session\":\"12345678901234567890\"}",
                &r),
        201);
    assert_string_equal(hdr(&r, "Location"), "/v1/locks/a/b%20c%C3%A9");
    assert_string_equal(jstr(&r, "mode"), "semaphore");
    assert_int_equal(jint(&r, "permits"), 3);
    respFree(&r);
    s = lastSeen(f);
    assert_string_equal(s.resource, "a/b c\xc3\xa9");
    assert_int_equal(s.wait_ms, 250);
    assert_int_equal(s.lock_delay_ms, 700);
    assert_int_equal(s.permits, 3);
    assert_int_equal(s.mode, TN__LOCK_MODE__SEMAPHORE);
    assert_true(s.session == 12345678901234567890ULL);

    /* Without ttl_ms the default TTL is asked for. */
    assert_int_equal(
        oneShot(f, "PUT", "/v1/locks/d", NULL, "{\"holder\":\"a\"}", &r), 201);
    respFree(&r);
    assert_int_equal(lastSeen(f).ttl_ms, 15000);
}

/* Someone else holds it: 409 problem naming the holder, Retry-After, ETag,
 * and one conflict log line. */
static void acquireHeld(void **state)
{
    struct fixture *f = *state;
    struct tresp r;
    json_t *hs;
    long ra;

    assert_int_equal(
        oneShot(f, "PUT", "/v1/locks/busy", "X-Request-Id: req-77\r\n",
                "{\"holder\":\"bob\",\"ttl_ms\":10000}", &r),
        409);
    assertProblem(&r, 409, "lock-held");
    assert_string_equal(hdr(&r, "X-Request-Id"), "req-77");
    assert_string_equal(jstr(&r, "instance"), "/v1/locks/busy");
    assert_string_equal(jstr(&r, "holder"), "alice");
    assert_string_equal(jstr(&r, "mode"), "exclusive");
    assert_string_equal(jstr(&r, "acquired_at"), "2026-01-01T00:00:00.000Z");
    assert_int_equal(jint(&r, "expires_in_ms"), 8123);
    assert_int_equal(jint(&r, "queue_len"), 2);
    assert_int_equal(jint(&r, "holder_token"), HOLDER_TOKEN);
    assert_non_null(strstr(jstr(&r, "detail"), "alice"));
    hs = json_object_get(body(&r), "holders");
    assert_int_equal(json_array_size(hs), 1);
    assert_string_equal(hdr(&r, "ETag"), "\"77\"");
    assert_string_equal(hdr(&r, "Cache-Control"), "no-store");
    ra = strtol(hdr(&r, "Retry-After"), NULL, 10);
    /* 8123 ms remaining, jittered by at most 10% + 500 ms, rounded up. */
    assert_true(ra >= 9 && ra <= 10);
    respFree(&r);

    uv_mutex_lock(&f->mu);
    assert_non_null(strstr(f->log, "event=conflict"));
    assert_non_null(strstr(f->log, "resource=\"busy\""));
    assert_non_null(strstr(f->log, "requester=\"bob\""));
    assert_non_null(strstr(f->log, "holder=\"alice\""));
    assert_non_null(strstr(f->log, "request_id=req-77"));
    uv_mutex_unlock(&f->mu);
}

/* Lock-delay: 409 lock-delay with lock_delay_until and Retry-After. */
static void acquireLockDelay(void **state)
{
    struct fixture *f = *state;
    struct tresp r;
    long ra;

    assert_int_equal(oneShot(f, "PUT", "/v1/locks/delay", NULL, BODY_A, &r),
                     409);
    assertProblem(&r, 409, "lock-delay");
    assert_non_null(jstr(&r, "lock_delay_until"));
    assert_true(jint(&r, "lock_delay_until_ms") > 0);
    ra = strtol(hdr(&r, "Retry-After"), NULL, 10);
    assert_true(ra >= 4 && ra <= 6);
    respFree(&r);
}

/* Idempotency-Key: same key replays (200, Idempotent-Replayed, same ETag). */
static void acquireIdempotent(void **state)
{
    struct fixture *f = *state;
    struct tresp r;
    char etag[64];
    struct seen s;

    assert_int_equal(oneShot(f, "PUT", "/v1/locks/idem",
                             "Idempotency-Key: key-1\r\n", BODY_A, &r),
                     201);
    snprintf(etag, sizeof etag, "%s", hdr(&r, "ETag"));
    assert_null(hdr(&r, "Idempotent-Replayed"));
    respFree(&r);
    s = lastSeen(f);
    assert_true(s.client_id ==
                httpIdempotencyClientId("key-1", "acquire", "idem"));
    assert_int_equal(s.seq, 1);

    assert_int_equal(oneShot(f, "PUT", "/v1/locks/idem",
                             "Idempotency-Key: key-1\r\n", BODY_A, &r),
                     200);
    assert_string_equal(hdr(&r, "ETag"), etag);
    assert_string_equal(hdr(&r, "Idempotent-Replayed"), "true");
    respFree(&r);
}

/* Renew with If-Match: 200; stale token 412 with the holder's ETag; expired
 * lease 410. */
static void renew(void **state)
{
    struct fixture *f = *state;
    struct tresp r;
    struct seen s;

    assert_int_equal(oneShot(f, "PUT", "/v1/locks/r", "If-Match: \"42\"\r\n",
                             "{\"ttl_ms\":5000}", &r),
                     200);
    assert_string_equal(hdr(&r, "ETag"), "\"42\"");
    assert_int_equal(jint(&r, "ttl_ms"), 5000);
    assert_int_equal(jint(&r, "valid_for_ms"), 4850);
    respFree(&r);
    s = lastSeen(f);
    assert_int_equal(s.body_case, TN__REQUEST__BODY_RENEW);
    assert_int_equal(s.token, 42);
    assert_int_equal(s.ttl_ms, 5000);

    /* Body is optional. */
    assert_int_equal(
        oneShot(f, "PUT", "/v1/locks/r", "If-Match: \"42\"\r\n", NULL, &r),
        200);
    respFree(&r);
    assert_int_equal(lastSeen(f).ttl_ms, 0);

    assert_int_equal(
        oneShot(f, "PUT", "/v1/locks/r", "If-Match: \"41\"\r\n", NULL, &r),
        412);
    assertProblem(&r, 412, "token-mismatch");
    assert_string_equal(hdr(&r, "ETag"), "\"77\"");
    respFree(&r);

    assert_int_equal(
        oneShot(f, "PUT", "/v1/locks/r", "If-Match: \"40\"\r\n", NULL, &r),
        410);
    assertProblem(&r, 410, "lease-expired");
    respFree(&r);

    /* Renew takes only ttl_ms. */
    assert_int_equal(oneShot(f, "PUT", "/v1/locks/r", "If-Match: \"42\"\r\n",
                             BODY_A, &r),
                     400);
    assertProblem(&r, 400, "invalid-request");
    assertField(&r, "holder");
    respFree(&r);
}

/* Release: 204; 412 stale; 410 expired; 428 without If-Match; 400 for a
 * malformed If-Match. */
static void release(void **state)
{
    struct fixture *f = *state;
    struct tresp r;

    assert_int_equal(oneShot(f, "DELETE", "/v1/locks/x",
                             "If-Match: \"42\"\r\n", NULL, &r),
                     204);
    assert_null(hdr(&r, "Content-Length"));
    assert_int_equal(r.body_len, 0);
    respFree(&r);
    assert_int_equal(lastSeen(f).body_case, TN__REQUEST__BODY_RELEASE);
    assert_int_equal(lastSeen(f).token, 42);
    assert_string_equal(lastSeen(f).resource, "x");

    assert_int_equal(oneShot(f, "DELETE", "/v1/locks/x",
                             "If-Match: \"41\"\r\n", NULL, &r),
                     412);
    assertProblem(&r, 412, "token-mismatch");
    assert_string_equal(hdr(&r, "ETag"), "\"77\"");
    assert_string_equal(jstr(&r, "holder"), "alice");
    respFree(&r);

    assert_int_equal(oneShot(f, "DELETE", "/v1/locks/x",
                             "If-Match: \"40\"\r\n", NULL, &r),
                     410);
    assertProblem(&r, 410, "lease-expired");
    respFree(&r);

    assert_int_equal(oneShot(f, "DELETE", "/v1/locks/x", NULL, NULL, &r), 428);
    assertProblem(&r, 428, "precondition-required");
    respFree(&r);

    assert_int_equal(oneShot(f, "DELETE", "/v1/locks/x", "If-Match: *\r\n",
                             NULL, &r),
                     400);
    assertProblem(&r, 400, "invalid-request");
    assertField(&r, "If-Match");
    respFree(&r);
}

/* Dispatch statuses map onto HTTP statuses. */
static void statusMapping(void **state)
{
    struct fixture *f = *state;
    struct tresp r;

    assert_int_equal(oneShot(f, "PUT", "/v1/locks/bad", NULL, BODY_A, &r), 422);
    assertProblem(&r, 422, "invalid-value");
    assertField(&r, "ttl_ms");
    respFree(&r);

    assert_int_equal(oneShot(f, "PUT", "/v1/locks/noleader", NULL, BODY_A, &r),
                     503);
    assertProblem(&r, 503, "no-leader");
    assert_non_null(hdr(&r, "Retry-After"));
    respFree(&r);

    assert_int_equal(oneShot(f, "PUT", "/v1/locks/unknown", NULL, BODY_A, &r),
                     504);
    assertProblem(&r, 504, "commit-unknown");
    respFree(&r);

    assert_int_equal(oneShot(f, "PUT", "/v1/locks/timeout", NULL, BODY_A, &r),
                     504);
    assertProblem(&r, 504, "timeout");
    respFree(&r);

    assert_int_equal(oneShot(f, "PUT", "/v1/locks/gone", NULL,
                             "{\"session\":12}", &r),
                     410);
    assertProblem(&r, 410, "session-expired");
    respFree(&r);
}

/* Bad bodies: malformed JSON, unknown fields, wrong types are 400; values
 * out of range are 422; each names the field. */
static void badBodies(void **state)
{
    struct fixture *f = *state;
    static const struct
    {
        const char *body;
        int status;
        const char *field;
    } cases[] = {
        { "{\"holder\":", 400, "body" },
        { "[1,2]", 400, "body" },
        { "{\"holder\":\"a\"} x", 400, "body" },
        { "{\"holder\":\"a\",\"holder\":\"b\"}", 400, "body" },
        { "{\"holder\":\"a\",\"color\":\"red\"}", 400, "color" },
        { "{\"holder\":\"a\",\"ttl_ms\":\"10\"}", 400, "ttl_ms" },
        { "{\"holder\":\"a\",\"ttl_ms\":1.5}", 400, "ttl_ms" },
        { "{\"holder\":7}", 400, "holder" },
        { "{\"holder\":\"a\",\"mode\":3}", 400, "mode" },
        { "{\"holder\":\"a\",\"session\":true}", 400, "session" },
        { "{\"ttl_ms\":1000}", 400, "holder" },
        { "", 400, "holder" },
        { "{\"holder\":\"a\\u0001\"}", 400, "holder" },
        { "{\"holder\":\"a\\u0000b\"}", 400, "body" }, /* jansson */
        { "{\"holder\":\"a\\u0085\"}", 400, "holder" },
        { "{\"holder\":\"a\",\"ttl_ms\":-1}", 422, "ttl_ms" },
        { "{\"holder\":\"a\",\"ttl_ms\":0}", 422, "ttl_ms" },
        { "{\"holder\":\"a\",\"ttl_ms\":4294967296}", 422, "ttl_ms" },
        { "{\"holder\":\"a\",\"wait_ms\":-5}", 422, "wait_ms" },
        { "{\"holder\":\"a\",\"mode\":\"upgradable\"}", 422, "mode" },
        { "{\"holder\":\"a\",\"mode\":\"semaphore\"}", 422, "permits" },
        { "{\"holder\":\"a\",\"mode\":\"semaphore\",\"permits\":0}", 422,
          "permits" },
        { "{\"holder\":\"a\",\"permits\":2}", 422, "permits" },
        { "{\"holder\":\"\"}", 422, "holder" },
        { "{\"session\":0}", 422, "session" },
    };
    size_t i;
    unsigned before = counter(f, &f->n_submits);

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tresp r;
        int status =
            oneShot(f, "PUT", "/v1/locks/x", NULL, cases[i].body, &r);
        if (status != cases[i].status) {
            fail_msg("body %s: want %d got %d %s", cases[i].body,
                     cases[i].status, status, r.body != NULL ? r.body : "");
        }
        assertProblem(&r, cases[i].status,
                      cases[i].status == 400 ? "invalid-request"
                                             : "invalid-value");
        assertField(&r, cases[i].field);
        respFree(&r);
    }
    /* None of them reached the dispatch. */
    assert_int_equal(counter(f, &f->n_submits), before);
}

/* Bad resource ids are 400 naming "resource". */
static void badResources(void **state)
{
    struct fixture *f = *state;
    static char longid[700];
    const char *paths[] = {
        "/v1/locks/", "/v1/locks/%FF", "/v1/locks/a%01b", "/v1/locks/a%7F",
        "/v1/locks/a%00b", "/v1/locks/%C2%85", "/v1/locks/%zz", "/v1/locks/%",
        "/v1/locks/%C0%AF", longid,
    };
    size_t i;

    memcpy(longid, "/v1/locks/", 10);
    memset(longid + 10, 'x', 513);
    longid[523] = '\0';
    for (i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        struct tresp r;
        int status = oneShot(f, "PUT", paths[i], NULL, BODY_A, &r);
        if (status != 400) {
            fail_msg("%s: want 400 got %d", paths[i], status);
        }
        assertProblem(&r, 400, "invalid-request");
        assertField(&r, "resource");
        respFree(&r);
        /* The same for GET. */
        assert_int_equal(oneShot(f, "GET", paths[i], NULL, NULL, &r), 400);
        respFree(&r);
    }
    /* Exactly 512 bytes is fine. */
    longid[522] = '\0';
    {
        struct tresp r;
        assert_int_equal(oneShot(f, "PUT", longid, NULL, BODY_A, &r), 201);
        respFree(&r);
        assert_int_equal(strlen(lastSeen(f).resource), 512);
    }
}

/* Lock state: held (ETag of the holder), free, lock-delay, not found. */
static void getLock(void **state)
{
    struct fixture *f = *state;
    struct tresp r;
    json_t *h;
    struct seen s;

    assert_int_equal(oneShot(f, "GET", "/v1/locks/busy", NULL, NULL, &r), 200);
    assert_string_equal(hdr(&r, "ETag"), "\"77\"");
    assert_string_equal(hdr(&r, "Cache-Control"), "no-store");
    assert_string_equal(jstr(&r, "state"), "held");
    assert_string_equal(jstr(&r, "resource"), "busy");
    assert_int_equal(jint(&r, "generation"), 5);
    assert_int_equal(jint(&r, "queue_len"), 2);
    assert_int_equal(jint(&r, "token"), HOLDER_TOKEN);
    h = json_array_get(json_object_get(body(&r), "holders"), 0);
    assert_string_equal(json_string_value(json_object_get(h, "holder")),
                        "alice");
    assert_int_equal(json_integer_value(json_object_get(h, "expires_in_ms")),
                     8123);
    assert_string_equal(json_string_value(json_object_get(h, "acquired_at")),
                        "2026-01-01T00:00:00.000Z");
    respFree(&r);
    s = lastSeen(f);
    assert_int_equal(s.body_case, TN__REQUEST__BODY_GET_LOCK);
    assert_false(s.stale);

    assert_int_equal(oneShot(f, "GET", "/v1/locks/free-one", NULL, NULL, &r),
                     200);
    assert_null(hdr(&r, "ETag"));
    assert_string_equal(jstr(&r, "state"), "free");
    assert_int_equal(json_array_size(json_object_get(body(&r), "holders")), 0);
    respFree(&r);

    assert_int_equal(oneShot(f, "GET", "/v1/locks/delay", NULL, NULL, &r), 200);
    assert_string_equal(jstr(&r, "state"), "lock-delay");
    respFree(&r);

    assert_int_equal(oneShot(f, "GET", "/v1/locks/missing", NULL, NULL, &r),
                     200);
    assert_string_equal(jstr(&r, "state"), "free");
    respFree(&r);

    assert_int_equal(oneShot(f, "GET",
                             "/v1/locks/busy?consistency=stale&index=7&wait=2s",
                             NULL, NULL, &r),
                     200);
    respFree(&r);
    s = lastSeen(f);
    assert_true(s.stale);
    assert_int_equal(s.index, 7);
    assert_int_equal(s.wait_ms, 2000);

    assert_int_equal(
        oneShot(f, "GET", "/v1/locks/busy?colour=red", NULL, NULL, &r), 400);
    assertProblem(&r, 400, "invalid-request");
    respFree(&r);
    assert_int_equal(
        oneShot(f, "GET", "/v1/locks/busy?consistency=maybe", NULL, NULL, &r),
        400);
    assertField(&r, "consistency");
    respFree(&r);
    assert_int_equal(
        oneShot(f, "GET", "/v1/locks/busy?wait=1h", NULL, NULL, &r), 400);
    respFree(&r);
    assert_int_equal(
        oneShot(f, "GET", "/v1/locks/busy?wait=900s", NULL, NULL, &r), 422);
    respFree(&r);

    /* HEAD: the headers of GET, no body. */
    assert_int_equal(oneShot(f, "HEAD", "/v1/locks/busy", NULL, NULL, &r), 200);
    assert_string_equal(hdr(&r, "ETag"), "\"77\"");
    assert_true(strtol(hdr(&r, "Content-Length"), NULL, 10) > 0);
    assert_int_equal(r.body_len, 0);
    respFree(&r);
}

/* List by prefix. */
static void listLocks(void **state)
{
    struct fixture *f = *state;
    struct tresp r;
    json_t *locks;

    assert_int_equal(
        oneShot(f, "GET", "/v1/locks?prefix=jobs%2F&limit=10", NULL, NULL, &r),
        200);
    locks = json_object_get(body(&r), "locks");
    assert_int_equal(json_array_size(locks), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(locks, 0), "state")),
        "held");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(locks, 1), "mode")),
        "semaphore");
    assert_int_equal(jint(&r, "count"), 2);
    respFree(&r);
    assert_string_equal(lastSeen(f).prefix, "jobs/");
    assert_int_equal(lastSeen(f).limit, 10);

    assert_int_equal(oneShot(f, "GET", "/v1/locks?limit=0", NULL, NULL, &r),
                     422);
    respFree(&r);
    assert_int_equal(oneShot(f, "GET", "/v1/locks?prefix=%01", NULL, NULL, &r),
                     400);
    assertField(&r, "prefix");
    respFree(&r);
}

/* Cluster status, healthz, readyz. */
static void clusterAndHealth(void **state)
{
    struct fixture *f = *state;
    struct tresp r;
    json_t *ms;

    assert_int_equal(oneShot(f, "GET", "/v1/cluster", NULL, NULL, &r), 200);
    assert_int_equal(jint(&r, "node_id"), 2);
    assert_string_equal(jstr(&r, "state"), "follower");
    assert_int_equal(jint(&r, "leader_id"), 1);
    assert_string_equal(jstr(&r, "leader_http"), "127.0.0.1:7201");
    assert_string_equal(jstr(&r, "leader_rpc"), "127.0.0.1:7101");
    assert_int_equal(jint(&r, "term"), 4);
    assert_int_equal(jint(&r, "commit_index"), 120);
    assert_int_equal(jint(&r, "applied_index"), 118);
    ms = json_object_get(body(&r), "members");
    assert_int_equal(json_array_size(ms), 3);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(ms, 2), "http_address")),
                        "127.0.0.1:7203");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(ms, 0), "role")),
        "voter");
    respFree(&r);

    assert_int_equal(oneShot(f, "GET", "/healthz", NULL, NULL, &r), 200);
    assert_string_equal(jstr(&r, "status"), "ok");
    assert_int_equal(jint(&r, "node_id"), 2);
    respFree(&r);

    assert_int_equal(oneShot(f, "GET", "/readyz", NULL, NULL, &r), 200);
    respFree(&r);
    setFlag(f, &f->ready, false);
    assert_int_equal(oneShot(f, "GET", "/readyz", NULL, NULL, &r), 503);
    assert_string_equal(jstr(&r, "status"), "not-ready");
    assert_non_null(hdr(&r, "Retry-After"));
    respFree(&r);
    /* healthz stays 200 while not ready. */
    assert_int_equal(oneShot(f, "GET", "/healthz", NULL, NULL, &r), 200);
    respFree(&r);
}

/* Sessions: open, keepalive, close; unknown session 410. */
static void sessions(void **state)
{
    struct fixture *f = *state;
    struct tresp r;

    assert_int_equal(oneShot(f, "POST", "/v1/sessions", NULL,
                             "{\"holder\":\"worker-7\",\"ttl_ms\":20000}", &r),
                     201);
    assert_string_equal(hdr(&r, "Location"), "/v1/sessions/555");
    assert_int_equal(jint(&r, "session"), 555);
    assert_int_equal(jint(&r, "ttl_ms"), 20000);
    assert_string_equal(jstr(&r, "holder"), "worker-7");
    respFree(&r);
    assert_string_equal(lastSeen(f).holder, "worker-7");

    assert_int_equal(oneShot(f, "PUT", "/v1/sessions/555", NULL, NULL, &r),
                     200);
    assert_int_equal(jint(&r, "session"), 555);
    respFree(&r);
    assert_int_equal(oneShot(f, "PUT", "/v1/sessions/556", NULL, NULL, &r),
                     410);
    assertProblem(&r, 410, "session-expired");
    respFree(&r);
    assert_int_equal(oneShot(f, "DELETE", "/v1/sessions/555", NULL, NULL, &r),
                     204);
    respFree(&r);
    assert_int_equal(oneShot(f, "DELETE", "/v1/sessions/abc", NULL, NULL, &r),
                     400);
    assertField(&r, "session");
    respFree(&r);
    assert_int_equal(oneShot(f, "GET", "/v1/sessions/555", NULL, NULL, &r),
                     405);
    respFree(&r);
}

/* The write gate: 204 current, 409 held by another, 412 stale. */
static void fence(void **state)
{
    struct fixture *f = *state;
    struct tresp r;

    assert_int_equal(oneShot(f, "GET", "/v1/fence/busy?token=77", NULL, NULL,
                             &r),
                     204);
    respFree(&r);
    assert_int_equal(oneShot(f, "GET", "/v1/fence/busy?token=76", NULL, NULL,
                             &r),
                     409);
    assertProblem(&r, 409, "lock-held");
    respFree(&r);
    assert_int_equal(oneShot(f, "GET", "/v1/fence/free-one?token=76", NULL,
                             NULL, &r),
                     412);
    assertProblem(&r, 412, "token-stale");
    respFree(&r);
    assert_int_equal(oneShot(f, "GET", "/v1/fence/busy", NULL, NULL, &r), 400);
    assertField(&r, "token");
    respFree(&r);

    /* The alias of DESIGN §6's table: /v1/locks/{id}/check?token=T. */
    assert_int_equal(oneShot(f, "GET", "/v1/locks/busy/check?token=77", NULL,
                             NULL, &r),
                     204);
    assert_string_equal(lastSeen(f).resource, "busy");
    respFree(&r);
    assert_int_equal(oneShot(f, "GET", "/v1/locks/busy/check?token=76", NULL,
                             NULL, &r),
                     409);
    assertProblem(&r, 409, "lock-held");
    respFree(&r);
    /* Without a token it is the state of the lock named "busy/check". */
    assert_int_equal(oneShot(f, "GET", "/v1/locks/busy/check", NULL, NULL,
                             &r),
                     200);
    assert_string_equal(jstr(&r, "resource"), "busy/check");
    respFree(&r);
}

/* Unknown paths 404; wrong methods 405 with Allow; OPTIONS lists them. */
static void routing(void **state)
{
    struct fixture *f = *state;
    struct tresp r;

    assert_int_equal(oneShot(f, "GET", "/nope", NULL, NULL, &r), 404);
    assertProblem(&r, 404, "not-found");
    respFree(&r);
    assert_int_equal(oneShot(f, "GET", "/v1/lock/x", NULL, NULL, &r), 404);
    respFree(&r);

    assert_int_equal(oneShot(f, "POST", "/v1/locks/x", NULL, BODY_A, &r), 405);
    assertProblem(&r, 405, "method-not-allowed");
    assert_string_equal(hdr(&r, "Allow"), "GET, HEAD, PUT, DELETE, OPTIONS");
    respFree(&r);
    assert_int_equal(oneShot(f, "PATCH", "/v1/cluster", NULL, "{}", &r), 405);
    assert_string_equal(hdr(&r, "Allow"), "GET, HEAD, OPTIONS");
    respFree(&r);
    assert_int_equal(oneShot(f, "DELETE", "/healthz", NULL, NULL, &r), 405);
    respFree(&r);

    assert_int_equal(oneShot(f, "OPTIONS", "/v1/locks/x", NULL, NULL, &r), 204);
    assert_string_equal(hdr(&r, "Allow"), "GET, HEAD, PUT, DELETE, OPTIONS");
    respFree(&r);
}

/* The backend refusing a request is a 503, not a hang. */
static void backendRefuses(void **state)
{
    struct fixture *f = *state;
    struct tresp r;

    setFlag(f, &f->refuse, true);
    assert_int_equal(oneShot(f, "PUT", "/v1/locks/x", NULL, BODY_A, &r), 503);
    assertProblem(&r, 503, "unavailable");
    respFree(&r);
    setFlag(f, &f->refuse, false);
}

/* Check the Prometheus text format: every sample belongs to a family
 * announced by HELP and TYPE lines just before, names are well-formed,
 * values parse. */
static void checkExposition(const char *text)
{
    char family[128] = "";
    char type[32] = "";
    const char *line = text;

    while (*line != '\0') {
        const char *end = strchr(line, '\n');
        char l[512];
        size_t n;

        assert_non_null(end); /* every line ends with a newline */
        n = (size_t)(end - line);
        assert_true(n < sizeof l);
        memcpy(l, line, n);
        l[n] = '\0';
        if (strncmp(l, "# HELP ", 7) == 0) {
            assert_int_equal(sscanf(l + 7, "%127s", family), 1);
            type[0] = '\0';
        } else if (strncmp(l, "# TYPE ", 7) == 0) {
            char name[128];
            assert_int_equal(sscanf(l + 7, "%127s %31s", name, type), 2);
            assert_string_equal(name, family);
            assert_true(strcmp(type, "counter") == 0 ||
                        strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
            if (strcmp(type, "counter") == 0) {
                assert_non_null(strstr(family, "_total"));
            }
        } else {
            char name[128];
            size_t k = 0;
            const char *v;
            char *vend;
            while (l[k] != '\0' && l[k] != '{' && l[k] != ' ') {
                assert_true((l[k] >= 'a' && l[k] <= 'z') || l[k] == '_' ||
                            (l[k] >= '0' && l[k] <= '9'));
                k++;
            }
            memcpy(name, l, k);
            name[k] = '\0';
            assert_true(type[0] != '\0');
            if (strcmp(type, "histogram") == 0) {
                assert_true(strncmp(name, family, strlen(family)) == 0);
            } else {
                assert_string_equal(name, family);
            }
            v = strrchr(l, ' ');
            assert_non_null(v);
            strtod(v + 1, &vend);
            assert_true(*vend == '\0' && vend != v + 1);
        }
        line = end + 1;
    }
}

/* GET /metrics: shim counters, Raft facts and the backend's own metrics. */
static void metrics(void **state)
{
    struct fixture *f = *state;
    struct tresp r;

    assert_int_equal(oneShot(f, "PUT", "/v1/locks/m", NULL, BODY_A, &r), 201);
    respFree(&r);
    assert_int_equal(oneShot(f, "PUT", "/v1/locks/busy", NULL, BODY_A, &r),
                     409);
    respFree(&r);
    assert_int_equal(oneShot(f, "PUT", "/v1/locks/delay", NULL, BODY_A, &r),
                     409);
    respFree(&r);

    assert_int_equal(oneShot(f, "GET", "/metrics", NULL, NULL, &r), 200);
    assert_string_equal(hdr(&r, "Content-Type"),
                        "text/plain; version=0.0.4; charset=utf-8");
    checkExposition(r.body);
    assert_non_null(strstr(r.body, "tenure_raft_term 4\n"));
    assert_non_null(strstr(r.body, "tenure_raft_commit_index 120\n"));
    assert_non_null(strstr(r.body, "tenure_node_ready 1\n"));
    assert_non_null(strstr(r.body, "tenure_http_operations_total{op=\"acquire\","
                                   "outcome=\"ok\"} 1\n"));
    assert_non_null(strstr(r.body, "tenure_http_operations_total{op=\"acquire\","
                                   "outcome=\"held\"} 1\n"));
    assert_non_null(strstr(r.body, "tenure_http_operations_total{op=\"release\","
                                   "outcome=\"ok\"} 0\n"));
    assert_non_null(
        strstr(r.body, "tenure_http_conflicts_total{kind=\"lock_held\"} 1\n"));
    assert_non_null(
        strstr(r.body, "tenure_http_conflicts_total{kind=\"lock_delay\"} 1\n"));
    assert_non_null(strstr(r.body, "tenure_http_responses_total{code=\"201\"} 1\n"));
    assert_non_null(strstr(r.body, "tenure_http_operation_duration_seconds_bucket{"
                                   "op=\"acquire\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(r.body, "tenure_http_operation_duration_seconds_count{"
                                   "op=\"acquire\"} 3\n"));
    assert_non_null(strstr(r.body, "tenure_sessions 3\n"));
    respFree(&r);
}

/* The most contended resources come from the backend. */
static void contention(void **state)
{
    struct fixture *f = *state;
    struct tresp r;
    json_t *a;

    assert_int_equal(
        oneShot(f, "GET", "/v1/stats/contention?top=5", NULL, NULL, &r), 200);
    a = json_object_get(body(&r), "resources");
    assert_int_equal(json_array_size(a), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(a, 0), "resource")),
        "orders/42");
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(a, 0), "conflicts")),
        17);
    assert_int_equal(json_integer_value(
                         json_object_get(json_array_get(a, 0), "wait_p99_ms")),
                     2400);
    respFree(&r);
    assert_int_equal(
        oneShot(f, "GET", "/v1/stats/contention?top=1", NULL, NULL, &r), 200);
    assert_int_equal(json_array_size(json_object_get(body(&r), "resources")),
                     1);
    respFree(&r);
    assert_int_equal(
        oneShot(f, "GET", "/v1/stats/contention?top=0", NULL, NULL, &r), 422);
    respFree(&r);
}

/* GET / serves the status page; /healthz allows cross-origin reads so
 * that the page of any node can probe every member. */
static void statusPage(void **state)
{
    struct fixture *f = *state;
    struct tresp r;

    assert_int_equal(oneShot(f, "GET", "/", NULL, NULL, &r), 200);
    assert_string_equal(hdr(&r, "Content-Type"), "text/html; charset=utf-8");
    assert_non_null(strstr(r.body, "<title>tenure</title>"));
    assert_non_null(strstr(r.body, "/v1/cluster"));
    assert_null(strstr(r.body, "innerHTML"));
    respFree(&r);
    assert_int_equal(oneShot(f, "GET", "/healthz", NULL, NULL, &r), 200);
    assert_string_equal(hdr(&r, "Access-Control-Allow-Origin"), "*");
    respFree(&r);
}

/* ================================================ connection handling */

/* Keep-alive: several requests one after the other on one connection. */
static void keepAlive(void **state)
{
    struct fixture *f = *state;
    struct tc c;
    struct tresp r;
    int i;

    tcOpen(f, &c);
    for (i = 0; i < 5; i++) {
        tcRequest(&c, "PUT", "/v1/locks/ka", NULL, BODY_A);
        assert_int_equal(tcRead(&c, &r), 201);
        assert_null(hdr(&r, "Connection"));
        respFree(&r);
        tcRequest(&c, "GET", "/v1/locks/busy", NULL, NULL);
        assert_int_equal(tcRead(&c, &r), 200);
        respFree(&r);
    }
    tcClose(&c);
}

/* Pipelined requests are answered in order even when the first completes
 * last. */
static void pipelinedInOrder(void **state)
{
    struct fixture *f = *state;
    struct tc c;
    struct tresp r;
    char rid1[160];

    tcOpen(f, &c);
    tcSend(&c,
           "PUT /v1/locks/slow-1 HTTP/1.1\r\nHost: t\r\n"
           "Content-Length: 29\r\n\r\n" BODY_A
           "GET /v1/locks/busy HTTP/1.1\r\nHost: t\r\n\r\n"
           "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(tcRead(&c, &r), 201);
    assert_string_equal(jstr(&r, "resource"), "slow-1");
    snprintf(rid1, sizeof rid1, "%s", hdr(&r, "X-Request-Id"));
    respFree(&r);
    assert_int_equal(tcRead(&c, &r), 200);
    assert_string_equal(jstr(&r, "resource"), "busy");
    assert_string_not_equal(hdr(&r, "X-Request-Id"), rid1);
    respFree(&r);
    assert_int_equal(tcRead(&c, &r), 200);
    assert_string_equal(jstr(&r, "status"), "ok");
    respFree(&r);
    tcClose(&c);
}

/* Pipelined requests run concurrently only while all of them are safe
 * (RFC 9112 §9.3.2): two GETs are with the backend at once, but a DELETE
 * behind a pending GET, or a GET behind a pending PUT, is submitted only
 * once the request before it was answered. */
static void pipelinedUnsafeWaits(void **state)
{
    struct fixture *f = *state;
    struct tc c;
    struct tresp r;
    unsigned submits = counter(f, &f->n_submits);
    unsigned cancels = counter(f, &f->n_cancels);

    /* Safe after safe: both submitted though the first (a long-poll that
     * never ends) is pending. */
    tcOpen(f, &c);
    tcSend(&c, "GET /v1/locks/hang-s1?index=1&wait=60s HTTP/1.1\r\nHost: t\r\n\r\n"
               "GET /v1/locks/s2 HTTP/1.1\r\nHost: t\r\n\r\n");
    waitCounter(f, &f->n_submits, submits + 2);
    tcClose(&c);
    waitCounter(f, &f->n_cancels, cancels + 1);
    submits = counter(f, &f->n_submits);

    /* Unsafe after a pending request: held back while it is pending; once
     * the EOF cancels the long-poll, the DELETE goes out (short requests
     * are still answered after an EOF, for clients that half-close). */
    tcOpen(f, &c);
    tcSend(&c, "GET /v1/locks/hang-u1?index=1&wait=60s HTTP/1.1\r\nHost: t\r\n\r\n"
               "DELETE /v1/locks/u2 HTTP/1.1\r\nHost: t\r\n"
               "If-Match: \"5\"\r\n\r\n");
    waitCounter(f, &f->n_submits, submits + 1);
    usleep(200000);
    assert_int_equal(counter(f, &f->n_submits), submits + 1);
    tcClose(&c);
    waitCounter(f, &f->n_cancels, cancels + 2);
    waitCounter(f, &f->n_submits, submits + 2);
    assert_int_equal(lastSeen(f).body_case, TN__REQUEST__BODY_RELEASE);
    submits = counter(f, &f->n_submits);

    /* Safe after unsafe: the GET goes out once the PUT (150 ms) is
     * answered, and the answers come in order. */
    tcOpen(f, &c);
    tcSend(&c,
           "PUT /v1/locks/slow-p HTTP/1.1\r\nHost: t\r\n"
           "Content-Length: 29\r\n\r\n" BODY_A
           "GET /v1/locks/after-p HTTP/1.1\r\nHost: t\r\n\r\n");
    waitCounter(f, &f->n_submits, submits + 1);
    usleep(50000);
    assert_int_equal(counter(f, &f->n_submits), submits + 1);
    assert_int_equal(tcRead(&c, &r), 201);
    respFree(&r);
    assert_int_equal(tcRead(&c, &r), 200);
    assert_string_equal(jstr(&r, "resource"), "after-p");
    respFree(&r);
    assert_int_equal(counter(f, &f->n_submits), submits + 2);
    tcClose(&c);
}

/* More pipelined requests than max_pipeline: the parser pauses and resumes,
 * and every request is answered in order. */
static void pipelineBackpressure(void **state)
{
    struct fixture *f = *state;
    struct tc c;
    struct tresp r;
    char all[4096] = "";
    char one[256];
    int i;

    for (i = 0; i < 7; i++) {
        snprintf(one, sizeof one,
                 "GET /v1/locks/%sp%d HTTP/1.1\r\nHost: t\r\n\r\n",
                 i % 2 == 0 ? "slow-" : "", i);
        strcat(all, one);
    }
    tcOpen(f, &c);
    tcSend(&c, all);
    for (i = 0; i < 7; i++) {
        snprintf(one, sizeof one, "%sp%d", i % 2 == 0 ? "slow-" : "", i);
        assert_int_equal(tcRead(&c, &r), 200);
        assert_string_equal(jstr(&r, "resource"), one);
        respFree(&r);
    }
    tcClose(&c);
}

/* Garbage gets a 400 and a close; the server keeps serving. */
static void garbage(void **state)
{
    struct fixture *f = *state;
    struct tc c;
    struct tresp r;
    static const char junk[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
                               "garbage\r\n\r\n";

    tcOpen(f, &c);
    tcSendRaw(&c, junk, sizeof junk - 1);
    assert_int_equal(tcRead(&c, &r), 400);
    assertProblem(&r, 400, "invalid-request");
    assertField(&r, "http");
    assert_string_equal(hdr(&r, "Connection"), "close");
    respFree(&r);
    assert_true(tcClosedByPeer(&c));
    tcClose(&c);

    /* A good request, then garbage: the good one is answered first. */
    tcOpen(f, &c);
    tcSend(&c, "GET /v1/locks/slow-g HTTP/1.1\r\nHost: t\r\n\r\n"
               "BREW /pot HTCPCP/1.0\r\n\r\n");
    assert_int_equal(tcRead(&c, &r), 200);
    respFree(&r);
    assert_int_equal(tcRead(&c, &r), 400);
    respFree(&r);
    tcClose(&c);

    /* Random binary. */
    {
        unsigned char noise[4096];
        size_t i;
        srand(7);
        for (i = 0; i < sizeof noise; i++) {
            noise[i] = (unsigned char)rand();
        }
        tcOpen(f, &c);
        tcSendRaw(&c, (const char *)noise, sizeof noise);
        (void)tcRead(&c, &r); /* a 400, or a reset: either is fine */
        respFree(&r);
        tcClose(&c);
    }

    assert_int_equal(oneShot(f, "GET", "/healthz", NULL, NULL, &r), 200);
    respFree(&r);
}

/* Oversized bodies (declared or chunked) get 413, headers 431, URLs 414. */
static void limits(void **state)
{
    struct fixture *f = *state;
    struct tc c;
    struct tresp r;
    char *big = malloc(70000);
    size_t i;

    assert_non_null(big);
    /* Declared too large: answered right after the headers. */
    tcOpen(f, &c);
    tcSend(&c, "PUT /v1/locks/x HTTP/1.1\r\nHost: t\r\n"
               "Content-Length: 70000\r\n\r\n{\"holder\":");
    assert_int_equal(tcRead(&c, &r), 413);
    assertProblem(&r, 413, "body-too-large");
    assert_string_equal(hdr(&r, "Connection"), "close");
    respFree(&r);
    tcClose(&c);

    /* Chunked, growing past the limit. */
    memset(big, 'x', 70000);
    tcOpen(f, &c);
    tcSend(&c, "PUT /v1/locks/x HTTP/1.1\r\nHost: t\r\n"
               "Transfer-Encoding: chunked\r\n\r\n");
    for (i = 0; i < 3; i++) {
        tcSend(&c, "8000\r\n");
        tcSendRaw(&c, big, 0x8000);
        tcSend(&c, "\r\n");
    }
    assert_int_equal(tcRead(&c, &r), 413);
    respFree(&r);
    tcClose(&c);

    /* Headers over 8 KiB. */
    tcOpen(f, &c);
    tcSend(&c, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ");
    tcSendRaw(&c, big, 9000);
    tcSend(&c, "\r\n\r\n");
    assert_int_equal(tcRead(&c, &r), 431);
    assertProblem(&r, 431, "headers-too-large");
    respFree(&r);
    tcClose(&c);

    /* Request target over the limit. */
    tcOpen(f, &c);
    tcSend(&c, "GET /v1/locks/");
    tcSendRaw(&c, big, 9000);
    tcSend(&c, " HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(tcRead(&c, &r), 414);
    respFree(&r);
    tcClose(&c);

    /* A body right at the limit is read (and rejected as JSON: 400). */
    big[0] = '"';
    big[65535] = '"';
    tcOpen(f, &c);
    tcSend(&c, "PUT /v1/locks/x HTTP/1.1\r\nHost: t\r\n"
               "Content-Length: 65536\r\n\r\n");
    tcSendRaw(&c, big, 65536);
    assert_int_equal(tcRead(&c, &r), 400);
    assertField(&r, "body");
    respFree(&r);
    tcClose(&c);
    free(big);

    assert_int_equal(oneShot(f, "GET", "/healthz", NULL, NULL, &r), 200);
    respFree(&r);
}

/* HTTP/1.0 without keep-alive is answered and closed. */
static void http10(void **state)
{
    struct fixture *f = *state;
    struct tc c;
    struct tresp r;

    tcOpen(f, &c);
    tcSend(&c, "GET /healthz HTTP/1.0\r\n\r\n");
    assert_int_equal(tcRead(&c, &r), 200);
    assert_string_equal(hdr(&r, "Connection"), "close");
    respFree(&r);
    assert_true(tcClosedByPeer(&c));
    tcClose(&c);

    tcOpen(f, &c);
    tcSend(&c, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_int_equal(tcRead(&c, &r), 200);
    assert_string_equal(hdr(&r, "Connection"), "keep-alive");
    respFree(&r);
    tcClose(&c);
}

/* "Connection: close" after pipelined requests: everything before it is
 * answered, nothing after. */
static void connectionClose(void **state)
{
    struct fixture *f = *state;
    struct tc c;
    struct tresp r;

    tcOpen(f, &c);
    tcSend(&c, "GET /v1/locks/slow-c HTTP/1.1\r\nHost: t\r\n\r\n"
               "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
               "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(tcRead(&c, &r), 200);
    assert_string_equal(jstr(&r, "resource"), "slow-c");
    respFree(&r);
    assert_int_equal(tcRead(&c, &r), 200);
    assert_string_equal(hdr(&r, "Connection"), "close");
    respFree(&r);
    assert_true(tcClosedByPeer(&c));
    tcClose(&c);
}

/* Expect: 100-continue gets an interim 100 before the body is sent. */
static void expectContinue(void **state)
{
    struct fixture *f = *state;
    struct tc c;
    struct tresp r;

    tcOpen(f, &c);
    tcSend(&c, "PUT /v1/locks/e HTTP/1.1\r\nHost: t\r\n"
               "Content-Length: 29\r\nExpect: 100-continue\r\n\r\n");
    assert_int_equal(tcRead(&c, &r), 100);
    respFree(&r);
    tcSend(&c, BODY_A);
    assert_int_equal(tcRead(&c, &r), 201);
    respFree(&r);
    tcClose(&c);
}

/* A client that disconnects while its acquire waits in the queue: the
 * request is canceled through the backend and the server carries on. */
static void disconnectCancels(void **state)
{
    struct fixture *f = *state;
    struct tc c;
    struct tresp r;
    unsigned submits = counter(f, &f->n_submits);

    tcOpen(f, &c);
    tcRequest(&c, "PUT", "/v1/locks/hang-1", NULL,
              "{\"holder\":\"a\",\"wait_ms\":60000}");
    waitCounter(f, &f->n_submits, submits + 1);
    tcClose(&c);
    waitCounter(f, &f->n_cancels, 1);

    /* The same for a long-poll GET, this time with a reset. */
    tcOpen(f, &c);
    tcRequest(&c, "GET", "/v1/locks/hang-2?index=5&wait=60s", NULL, NULL);
    waitCounter(f, &f->n_submits, submits + 2);
    {
        struct linger lg = { 1, 0 };
        setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    tcClose(&c);
    waitCounter(f, &f->n_cancels, 2);
    assert_int_equal(oneShot(f, "GET", "/healthz", NULL, NULL, &r), 200);
    respFree(&r);

    /* Half-close: the pending answer still arrives. */
    tcOpen(f, &c);
    tcRequest(&c, "PUT", "/v1/locks/slow-h", NULL, BODY_A);
    shutdown(c.fd, SHUT_WR);
    assert_int_equal(tcRead(&c, &r), 201);
    respFree(&r);
    assert_true(tcClosedByPeer(&c));
    tcClose(&c);
}

/* Closing the server with requests pending cancels them and frees all
 * (the teardown checks that the loop closes cleanly). */
static void closeWithPending(void **state)
{
    struct fixture *f = *state;
    struct tc c[3];
    int i;
    unsigned submits = counter(f, &f->n_submits);

    for (i = 0; i < 3; i++) {
        tcOpen(f, &c[i]);
        tcRequest(&c[i], "PUT", "/v1/locks/hang-2", NULL, BODY_A);
    }
    waitCounter(f, &f->n_submits, submits + 3);
    /* Also one half-sent request and one idle connection. */
    tcSend(&c[0], "GET /healthz HTTP/1.1\r\nHo");
    tearDown(state);
    for (i = 0; i < 3; i++) {
        tcClose(&c[i]);
    }
    *state = NULL;
}

static int tearDownMaybe(void **state)
{
    if (*state != NULL) {
        return tearDown(state);
    }
    return 0;
}

/* Many concurrent connections, each with a request in flight. */
static void manyConnections(void **state)
{
    struct fixture *f = *state;
    enum { N = 200 };
    struct tc *c = calloc(N, sizeof *c);
    struct tresp r;
    char path[64];
    int i;

    assert_non_null(c);
    for (i = 0; i < N; i++) {
        tcOpen(f, &c[i]);
        snprintf(path, sizeof path, "/v1/locks/%sm%d", i % 3 ? "" : "slow-", i);
        tcRequest(&c[i], "PUT", path, NULL, BODY_A);
    }
    for (i = N - 1; i >= 0; i--) {
        snprintf(path, sizeof path, "%sm%d", i % 3 ? "" : "slow-", i);
        assert_int_equal(tcRead(&c[i], &r), 201);
        assert_string_equal(jstr(&r, "resource"), path);
        respFree(&r);
        tcClose(&c[i]);
    }
    free(c);
}

/* Connections beyond max_connections are closed at once. */
static void connectionLimit(void **state)
{
    struct fixture *f = *state;
    struct tc a;
    struct tc b;
    struct tc x;
    struct tresp r;

    tcOpen(f, &a);
    tcOpen(f, &b);
    tcRequest(&a, "GET", "/healthz", NULL, NULL);
    assert_int_equal(tcRead(&a, &r), 200);
    respFree(&r);
    tcRequest(&b, "GET", "/healthz", NULL, NULL);
    assert_int_equal(tcRead(&b, &r), 200);
    respFree(&r);
    tcOpen(f, &x);
    assert_true(tcClosedByPeer(&x));
    tcClose(&x);
    tcClose(&a);
    tcClose(&b);
}

/* A request that never finishes gets 408; an idle connection is closed. */
static void timeouts(void **state)
{
    struct fixture *f = *state;
    struct tc c;
    struct tresp r;

    tcOpen(f, &c);
    tcSend(&c, "GET /healthz HTTP/1.1\r\nHost: t\r\n");
    assert_int_equal(tcRead(&c, &r), 408);
    assertProblem(&r, 408, "request-timeout");
    respFree(&r);
    tcClose(&c);

    tcOpen(f, &c);
    tcRequest(&c, "GET", "/healthz", NULL, NULL);
    assert_int_equal(tcRead(&c, &r), 200);
    respFree(&r);
    assert_true(tcClosedByPeer(&c)); /* after idle_timeout_ms */
    tcClose(&c);

    /* A waiting request is not cut by the idle timer. */
    tcOpen(f, &c);
    tcRequest(&c, "GET", "/v1/locks/slow-t", NULL, NULL);
    tcRequest(&c, "GET", "/v1/locks/slow-u", NULL, NULL);
    assert_int_equal(tcRead(&c, &r), 200);
    respFree(&r);
    assert_int_equal(tcRead(&c, &r), 200);
    respFree(&r);
    tcClose(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(resourceValidation),
        cmocka_unit_test(helpers),
        cmocka_unit_test(badAddress),
        cmocka_unit_test_setup_teardown(acquireCreated, setUp, tearDown),
        cmocka_unit_test_setup_teardown(acquireFields, setUp, tearDown),
        cmocka_unit_test_setup_teardown(acquireHeld, setUp, tearDown),
        cmocka_unit_test_setup_teardown(acquireLockDelay, setUp, tearDown),
        cmocka_unit_test_setup_teardown(acquireIdempotent, setUp, tearDown),
        cmocka_unit_test_setup_teardown(renew, setUp, tearDown),
        cmocka_unit_test_setup_teardown(release, setUp, tearDown),
        cmocka_unit_test_setup_teardown(statusMapping, setUp, tearDown),
        cmocka_unit_test_setup_teardown(badBodies, setUp, tearDown),
        cmocka_unit_test_setup_teardown(badResources, setUp, tearDown),
        cmocka_unit_test_setup_teardown(getLock, setUp, tearDown),
        cmocka_unit_test_setup_teardown(listLocks, setUp, tearDown),
        cmocka_unit_test_setup_teardown(clusterAndHealth, setUp, tearDown),
        cmocka_unit_test_setup_teardown(sessions, setUp, tearDown),
        cmocka_unit_test_setup_teardown(fence, setUp, tearDown),
        cmocka_unit_test_setup_teardown(routing, setUp, tearDown),
        cmocka_unit_test_setup_teardown(backendRefuses, setUp, tearDown),
        cmocka_unit_test_setup_teardown(metrics, setUp, tearDown),
        cmocka_unit_test_setup_teardown(statusPage, setUp, tearDown),
        cmocka_unit_test_setup_teardown(contention, setUp, tearDown),
        cmocka_unit_test_setup_teardown(keepAlive, setUp, tearDown),
        cmocka_unit_test_setup_teardown(pipelinedInOrder, setUp, tearDown),
        cmocka_unit_test_setup_teardown(pipelinedUnsafeWaits, setUp,
                                        tearDown),
        cmocka_unit_test_setup_teardown(pipelineBackpressure,
                                        setUpSmallPipeline, tearDown),
        cmocka_unit_test_setup_teardown(garbage, setUp, tearDown),
        cmocka_unit_test_setup_teardown(limits, setUp, tearDown),
        cmocka_unit_test_setup_teardown(http10, setUp, tearDown),
        cmocka_unit_test_setup_teardown(connectionClose, setUp, tearDown),
        cmocka_unit_test_setup_teardown(expectContinue, setUp, tearDown),
        cmocka_unit_test_setup_teardown(disconnectCancels, setUp, tearDown),
        cmocka_unit_test_setup_teardown(closeWithPending, setUp,
                                        tearDownMaybe),
        cmocka_unit_test_setup_teardown(manyConnections, setUp, tearDown),
        cmocka_unit_test_setup_teardown(connectionLimit, setUpFewConnections,
                                        tearDown),
        cmocka_unit_test_setup_teardown(timeouts, setUpShortTimeouts,
                                        tearDown),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
