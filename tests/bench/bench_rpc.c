/* tnbench: the RPC client side. A connection (struct rconn) pipelines
 * framed protobuf requests and matches replies by id; a call (struct call)
 * is one request with its retry state.
 *
 * Happy path: callStart → send (connecting first if needed) → reply → done.
 * Retries, all with the same (client_id, seq), always from a timer (never
 * from inside the reply or failure that caused them):
 *   NOT_LEADER with a leader address → move the connection there;
 *   NOT_LEADER without one, connection refused/lost → next endpoint;
 *   NO_QUORUM, COMMIT_UNKNOWN, RATE_LIMITED, TIMEOUT → same place, later;
 * until the call's deadline, then done(CALL_EGIVEUP). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "frame.h"

enum { RC_IDLE = 0, RC_CONNECTING, RC_UP };

struct rtcp
{
    uv_tcp_t h;
    uv_connect_t creq;
    struct rconn *c; /* NULL once orphaned (closing) */
};

struct wreq
{
    uv_write_t w;
    char data[];
};

static char readBuf[256 * 1024];

/* Requests are written once per loop turn and connection, like the
 * daemon writes its answers: the clients that share a connection (--conns)
 * send what they have in one write. */
static struct rconn *dirtyHead;
static uv_prepare_t flushPrepare;
static uv_check_t flushCheck;
static bool flushInited;
static bool flushActive;

const char *statusName(int status)
{
    static const char *const names[] = {
        "OK",
        "HELD",
        "LOCK_DELAY",
        "TOKEN_MISMATCH",
        "LEASE_EXPIRED",
        "SESSION_EXPIRED",
        "NOT_LEADER",
        "NO_QUORUM",
        "COMMIT_UNKNOWN",
        "INVALID_ARGUMENT",
        "RATE_LIMITED",
        "TIMEOUT",
        "CANCELED",
        "NO_SPACE",
        "NOT_FOUND",
        "INTERNAL",
    };
    switch (status) {
    case CALL_ECONN:
        return "conn-lost";
    case CALL_EGIVEUP:
        return "gave-up";
    case CALL_ESTOPPED:
        return "stopped";
    case CALL_EPROTO:
        return "bad-reply";
    default:
        break;
    }
    if (status >= 0 && status < (int)(sizeof names / sizeof names[0])) {
        return names[status];
    }
    return "status?";
}

int errIndex(int status)
{
    if (status >= 0 && status < 32) {
        return status;
    }
    if (status < 0 && status > -16) {
        return 32 - status; /* 33.. */
    }
    return ERR_KINDS - 1;
}

/* -------------------------------------------------------------- address */

static int parseAddr(const char *addr, struct sockaddr_in *sa)
{
    char host[BENCH_ADDR_MAX];
    const char *colon = strrchr(addr, ':');
    size_t n;
    int port;
    if (colon == NULL) {
        return -1;
    }
    n = (size_t)(colon - addr);
    if (n == 0 || n >= sizeof host) {
        return -1;
    }
    memcpy(host, addr, n);
    host[n] = '\0';
    if (strcmp(host, "localhost") == 0) {
        strcpy(host, "127.0.0.1");
    }
    port = atoi(colon + 1);
    if (port <= 0 || port > 65535) {
        return -1;
    }
    return uv_ip4_addr(host, port, sa);
}

static int endpointIndex(const char *addr)
{
    for (int i = 0; i < B->n_rpc; i++) {
        if (strcmp(B->rpc_eps[i], addr) == 0) {
            return i;
        }
    }
    return -1;
}

/* ------------------------------------------------------------ connection */

static void callFailed(struct call *k, int status);
static void callSend(struct call *k);

void rconnInit(struct rconn *c, const char *addr, uint32_t cap)
{
    uint32_t n = 16;
    memset(c, 0, sizeof *c);
    snprintf(c->addr, sizeof c->addr, "%s", addr);
    c->ep = endpointIndex(addr);
    while (n < cap * 2) {
        n *= 2;
    }
    c->cap = n;
    c->slots = calloc(n, sizeof *c->slots);
    c->rd = malloc(sizeof *c->rd);
    if (c->slots == NULL || c->rd == NULL) {
        fprintf(stderr, "tnbench: out of memory\n");
        exit(3);
    }
    tn_frame_reader_init(c->rd, TN_FRAME_MAX_DEFAULT);
    /* A random 64-bit identity per connection for exactly-once. */
    c->client_id = ((uint64_t)rand() << 33) ^ ((uint64_t)rand() << 11) ^
                   (uint64_t)rand() ^ nowNs();
    if (c->client_id == 0) {
        c->client_id = 1;
    }
    c->forward = B->forward;
}

static void tcpClosed(uv_handle_t *h)
{
    free(h->data);
}

/* Disconnects; every call in flight or waiting is failed (retried later).
 * With @rotate the connection moves to the next endpoint. */
static void rconnDrop(struct rconn *c, bool rotate)
{
    struct call *wq;
    if (c->tcp != NULL) {
        c->tcp->c = NULL;
        uv_close((uv_handle_t *)&c->tcp->h, tcpClosed);
        c->tcp = NULL;
    }
    c->state = RC_IDLE;
    c->gen++;
    c->out_len = 0; /* the calls it carried fail below */
    tn_frame_reader_close(c->rd);
    tn_frame_reader_init(c->rd, TN_FRAME_MAX_DEFAULT);
    if (rotate && B->n_rpc > 0) {
        int next = (endpointIndex(c->addr) + 1) % B->n_rpc;
        snprintf(c->addr, sizeof c->addr, "%s", B->rpc_eps[next]);
        c->ep = next;
    }
    for (uint32_t i = 0; i < c->cap && c->inflight > 0; i++) {
        struct call *k = c->slots[i];
        if (k != NULL) {
            c->slots[i] = NULL;
            c->inflight--;
            callFailed(k, CALL_ECONN);
        }
    }
    c->inflight = 0;
    wq = c->waitq;
    c->waitq = c->waitq_tail = NULL;
    while (wq != NULL) {
        struct call *k = wq;
        wq = k->next;
        k->next = NULL;
        callFailed(k, CALL_ECONN);
    }
}

void rconnRetarget(struct rconn *c, const char *addr)
{
    if (strcmp(c->addr, addr) == 0) {
        return;
    }
    rconnDrop(c, false);
    snprintf(c->addr, sizeof c->addr, "%s", addr);
    c->ep = endpointIndex(addr);
}

static void allocCb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    *buf = uv_buf_init(readBuf, sizeof readBuf);
}

static void callOnReply(struct call *k, const Tn__Response *r);

static void readCb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct rtcp *t = s->data;
    struct rconn *c = t->c;
    const uint8_t *payload;
    size_t len;
    if (c == NULL || n == 0) {
        return;
    }
    if (n < 0) {
        rconnDrop(c, true);
        return;
    }
    if (tn_frame_reader_feed(c->rd, buf->base, (size_t)n) != 0) {
        rconnDrop(c, true);
        return;
    }
    while (c->tcp == t && tn_frame_reader_next(c->rd, &payload, &len) == 1) {
        Tn__Response *r = tn__response__unpack(NULL, len, payload);
        struct call *k;
        if (r == NULL) {
            rconnDrop(c, true);
            return;
        }
        k = c->slots[r->id & (c->cap - 1)];
        if (k == NULL || k->id != r->id || r->id == 0) {
            /* id 0: the daemon refused the stream. */
            if (r->id == 0) {
                fprintf(stderr, "tnbench: %s: %s: %s\n", c->addr,
                        statusName(r->status), r->message ? r->message : "");
                tn__response__free_unpacked(r, NULL);
                rconnDrop(c, true);
                return;
            }
            tn__response__free_unpacked(r, NULL);
            continue;
        }
        c->slots[r->id & (c->cap - 1)] = NULL;
        c->inflight--;
        callOnReply(k, r);
        tn__response__free_unpacked(r, NULL);
    }
}

static void flushWaitq(struct rconn *c)
{
    struct call *wq = c->waitq;
    c->waitq = c->waitq_tail = NULL;
    while (wq != NULL && c->state == RC_UP) {
        struct call *k = wq;
        wq = k->next;
        k->next = NULL;
        callSend(k);
    }
    /* Dropped while flushing: the rest fail too. */
    while (wq != NULL) {
        struct call *k = wq;
        wq = k->next;
        k->next = NULL;
        callFailed(k, CALL_ECONN);
    }
}

static void connectCb(uv_connect_t *req, int status)
{
    struct rtcp *t = req->handle->data;
    struct rconn *c = t->c;
    if (c == NULL) {
        return;
    }
    if (status < 0 || uv_read_start((uv_stream_t *)&t->h, allocCb, readCb)) {
        rconnDrop(c, true);
        return;
    }
    c->state = RC_UP;
    flushWaitq(c);
}

static void rconnConnect(struct rconn *c)
{
    struct sockaddr_in sa;
    struct rtcp *t;
    if (parseAddr(c->addr, &sa) != 0) {
        fprintf(stderr, "tnbench: bad address '%s'\n", c->addr);
        exit(2);
    }
    t = calloc(1, sizeof *t);
    if (t == NULL) {
        fprintf(stderr, "tnbench: out of memory\n");
        exit(3);
    }
    uv_tcp_init(B->loop, &t->h);
    t->h.data = t;
    t->c = c;
    c->tcp = t;
    c->state = RC_CONNECTING;
    uv_tcp_nodelay(&t->h, 1);
    if (uv_tcp_connect(&t->creq, &t->h, (const struct sockaddr *)&sa,
                       connectCb) != 0) {
        rconnDrop(c, true);
    }
}

static void writeCb(uv_write_t *w, int status)
{
    struct rtcp *t = w->handle->data;
    free(w);
    if (status < 0 && t->c != NULL) {
        rconnDrop(t->c, true);
    }
}

/* Hand @c's pending requests to the socket. */
static int rconnFlush(struct rconn *c)
{
    uv_buf_t b = uv_buf_init((char *)c->out, (unsigned)c->out_len);
    struct wreq *w;
    int n;
    if (c->out_len == 0 || c->tcp == NULL) {
        c->out_len = 0;
        return 0;
    }
    c->out_len = 0;
    n = uv_try_write((uv_stream_t *)&c->tcp->h, &b, 1);
    if (n == UV_EAGAIN) {
        n = 0;
    }
    if (n < 0) {
        return n;
    }
    if ((size_t)n == b.len) {
        return 0;
    }
    w = malloc(sizeof *w + b.len - (size_t)n);
    if (w == NULL) {
        return UV_ENOMEM;
    }
    memcpy(w->data, b.base + n, b.len - (size_t)n);
    b = uv_buf_init(w->data, (unsigned)(b.len - (size_t)n));
    n = uv_write(&w->w, (uv_stream_t *)&c->tcp->h, &b, 1, writeCb);
    if (n != 0) {
        free(w);
    }
    return n;
}

static void flushAll(void)
{
    while (dirtyHead != NULL) {
        struct rconn *c = dirtyHead;
        dirtyHead = c->dirty_next;
        c->dirty_next = NULL;
        c->dirty = false;
        if (rconnFlush(c) != 0) {
            rconnDrop(c, true);
        }
    }
    if (flushActive) {
        uv_prepare_stop(&flushPrepare);
        uv_check_stop(&flushCheck);
        flushActive = false;
    }
}

static void flushPrepareCb(uv_prepare_t *h)
{
    (void)h;
    flushAll();
}

static void flushCheckCb(uv_check_t *h)
{
    (void)h;
    flushAll();
}

/* Queue @data for the end of the loop turn. */
static int rconnWrite(struct rconn *c, const uint8_t *data, size_t len)
{
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap != 0 ? c->out_cap : 4096;
        uint8_t *p;
        while (cap < c->out_len + len) {
            cap *= 2;
        }
        p = realloc(c->out, cap);
        if (p == NULL) {
            return UV_ENOMEM;
        }
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    if (!c->dirty) {
        c->dirty = true;
        c->dirty_next = dirtyHead;
        dirtyHead = c;
    }
    if (!flushInited) {
        uv_prepare_init(B->loop, &flushPrepare);
        uv_check_init(B->loop, &flushCheck);
        flushInited = true;
    }
    if (!flushActive) {
        uv_prepare_start(&flushPrepare, flushPrepareCb);
        uv_check_start(&flushCheck, flushCheckCb);
        flushActive = true;
    }
    return 0;
}

/* ------------------------------------------------------------------ calls */

static void retryCb(uv_timer_t *t)
{
    struct call *k = t->data;
    if (nowNs() >= k->deadline || B->stopping > 1) {
        k->busy = false;
        k->done(k, CALL_EGIVEUP, NULL);
        return;
    }
    callSend(k);
}

static void onceFailCb(uv_timer_t *t)
{
    struct call *k = t->data;
    k->busy = false;
    k->done(k, k->fail_status, NULL);
}

static void retryLater(struct call *k, int why, uint64_t ms)
{
    if (k->once) {
        /* Completed from a timer, never from inside the failure. */
        k->fail_status = why;
        uv_timer_start(&k->timer, onceFailCb, 0, 0);
        return;
    }
    B->retries[errIndex(why)]++;
    uv_timer_start(&k->timer, retryCb, ms, 0);
}

/* Backoff for failures that may last (lost connection, no quorum): 5 ms,
 * doubling per attempt up to the workload's cap, with jitter. */
static uint64_t backoffMs(const struct call *k)
{
    uint64_t ms = 5;
    for (uint32_t i = 1; i < k->attempts && ms < B->retry_cap_ms; i++) {
        ms *= 2;
    }
    if (ms > B->retry_cap_ms) {
        ms = B->retry_cap_ms;
    }
    return ms / 2 + (uint64_t)rand() % (ms / 2 + 1);
}

static void callFailed(struct call *k, int status)
{
    retryLater(k, status, backoffMs(k));
}

static void callOnReply(struct call *k, const Tn__Response *r)
{
    struct rconn *c = k->conn;
    switch (r->status) {
    case TN__STATUS__NOT_LEADER:
        if (r->leader_rpc != NULL && r->leader_rpc[0] != '\0') {
            if (k->gen == c->gen) {
                rconnRetarget(c, r->leader_rpc);
            }
            retryLater(k, r->status, 0);
        } else {
            if (k->gen == c->gen) {
                rconnDrop(c, true);
            }
            retryLater(k, r->status, 10);
        }
        return;
    case TN__STATUS__NO_QUORUM:
    case TN__STATUS__COMMIT_UNKNOWN:
    case TN__STATUS__RATE_LIMITED:
    case TN__STATUS__TIMEOUT:
        retryLater(k, r->status, backoffMs(k));
        return;
    default:
        break;
    }
    k->busy = false;
    k->done(k, (int)r->status, r);
}

static void callSend(struct call *k)
{
    struct rconn *c = k->conn;
    uint8_t stackbuf[2048];
    uint8_t *buf = stackbuf;
    size_t n;
    uint64_t id;
    int rv;
    if (c->state != RC_UP) {
        k->next = NULL;
        if (c->waitq_tail != NULL) {
            c->waitq_tail->next = k;
        } else {
            c->waitq = k;
        }
        c->waitq_tail = k;
        if (c->state == RC_IDLE) {
            rconnConnect(c);
        }
        return;
    }
    if (c->inflight + 1 >= c->cap) {
        fprintf(stderr, "tnbench: more than %u requests in flight on one "
                        "connection\n",
                c->cap - 1);
        exit(3);
    }
    do {
        id = ++c->next_id;
    } while (id == 0 || c->slots[id & (c->cap - 1)] != NULL);
    c->slots[id & (c->cap - 1)] = k;
    c->inflight++;
    k->id = id;
    k->req.id = id;
    k->req.forward = c->forward;
    k->gen = c->gen;
    k->t_sent = nowNs();
    if (k->attempts++ == 0) {
        k->t_first = k->t_sent;
    }
    n = tn__request__get_packed_size(&k->req);
    if (n + TN_FRAME_HEADER > sizeof stackbuf) {
        buf = malloc(n + TN_FRAME_HEADER);
        if (buf == NULL) {
            fprintf(stderr, "tnbench: out of memory\n");
            exit(3);
        }
    }
    buf[0] = (uint8_t)(n >> 24);
    buf[1] = (uint8_t)(n >> 16);
    buf[2] = (uint8_t)(n >> 8);
    buf[3] = (uint8_t)n;
    tn__request__pack(&k->req, buf + TN_FRAME_HEADER);
    rv = rconnWrite(c, buf, n + TN_FRAME_HEADER);
    if (buf != stackbuf) {
        free(buf);
    }
    if (rv != 0) {
        rconnDrop(c, true); /* fails k too: it is in the slots */
    }
}

void callInit(struct call *k, struct rconn *c, call_done_cb done, void *data)
{
    memset(k, 0, sizeof *k);
    k->conn = c;
    k->done = done;
    k->data = data;
    uv_timer_init(B->loop, &k->timer);
    k->timer.data = k;
    k->inited = true;
}

static void callReset(struct call *k, Tn__Request__BodyCase bc, bool mutation)
{
    tn__request__init(&k->req);
    k->req.body_case = bc;
    k->mutation = mutation;
    k->attempts = 0;
    k->once = false;
}

void callSessionOpen(struct call *k, const char *holder, uint32_t ttl_ms)
{
    callReset(k, TN__REQUEST__BODY_SESSION_OPEN, true);
    tn__session_open__init(&k->u.so);
    snprintf(k->holder, sizeof k->holder, "%s", holder);
    k->u.so.holder = k->holder;
    k->u.so.ttl_ms = ttl_ms;
    k->req.session_open = &k->u.so;
}

void callKeepalive(struct call *k, uint64_t session)
{
    callReset(k, TN__REQUEST__BODY_KEEPALIVE, false);
    tn__session_keepalive__init(&k->u.ka);
    k->u.ka.session = session;
    k->req.keepalive = &k->u.ka;
}

void callSessionClose(struct call *k, uint64_t session)
{
    callReset(k, TN__REQUEST__BODY_SESSION_CLOSE, true);
    tn__session_close__init(&k->u.sc);
    k->u.sc.session = session;
    k->req.session_close = &k->u.sc;
}

void callAcquire(struct call *k,
                 uint64_t session,
                 const char *res,
                 uint32_t wait_ms)
{
    callReset(k, TN__REQUEST__BODY_ACQUIRE, true);
    tn__acquire__init(&k->u.aq);
    snprintf(k->res, sizeof k->res, "%s", res);
    k->u.aq.session = session;
    k->u.aq.resource = k->res;
    k->u.aq.mode = TN__LOCK_MODE__EXCLUSIVE;
    k->u.aq.wait_ms = wait_ms;
    k->req.acquire = &k->u.aq;
}

void callRelease(struct call *k, const char *res, uint64_t token)
{
    callReset(k, TN__REQUEST__BODY_RELEASE, true);
    tn__release__init(&k->u.rl);
    snprintf(k->res, sizeof k->res, "%s", res);
    k->u.rl.resource = k->res;
    k->u.rl.token = token;
    k->req.release = &k->u.rl;
}

void callClusterStatus(struct call *k)
{
    callReset(k, TN__REQUEST__BODY_CLUSTER_STATUS, false);
    tn__cluster_status__init(&k->u.cs);
    k->req.cluster_status = &k->u.cs;
}

void callStart(struct call *k, uint32_t timeout_ms)
{
    if (k->mutation) {
        k->req.client_id = k->conn->client_id;
        k->req.seq = ++k->conn->seq;
    }
    k->attempts = 0;
    k->busy = true;
    k->deadline = nowNs() + (uint64_t)timeout_ms * 1000000u;
    callSend(k);
}
